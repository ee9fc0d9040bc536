"""Real-world shapes of skill catalogues: SKILL.md trees, MCP tool lists and OpenAPI specs as their
authors write them (CRLF files, unclosed front matter, links, duplicate names and operationIds,
multi-file specs). Every fixture is written to tmp_path."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from ragroute.errors import CorpusFormatError
from ragroute.skills import Catalogue, SkillWarning, load_catalogue, load_mcp
from ragroute.skills.load_mcp import skills_from_mcp
from ragroute.skills.load_openapi import skills_from_openapi
from ragroute.skills.records import WarningLog


def load_quietly(path: Path, **kwargs) -> Catalogue:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkillWarning)
        return load_catalogue(path, **kwargs)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- SKILL.md


def test_crlf_skill_md_reads_like_lf(tmp_path: Path) -> None:
    # a SKILL.md saved on Windows: the first paragraph stood in for the description ran on into the
    # second one ("\r\n\r\n" is no blank line to a "\n" split), and the body kept its "\r"s
    write(tmp_path / "csv" / "SKILL.md", b"# CSV\r\n\r\nConvert CSV files.\r\n\r\nMore text.\r\n")
    write(tmp_path / "csv" / "notes.md", b"line one\r\nline two\r\n")
    skill = load_quietly(tmp_path).by_id("csv")
    assert skill.description == "Convert CSV files."
    assert "\r" not in skill.body
    assert skill.body == "# CSV\n\nConvert CSV files.\n\nMore text.\n\n[file: notes.md]\nline one\nline two"


def test_unclosed_front_matter_still_gives_name_and_description(tmp_path: Path) -> None:
    write(
        tmp_path / "fmt" / "SKILL.md",
        "---\nname: formatter\ndescription: Format SQL queries.\n\n# Use\n\nRun it.\n",
    )
    with pytest.warns(SkillWarning, match=r"fmt/SKILL\.md: broken front matter: front matter is not closed"):
        catalogue = load_catalogue(tmp_path)
    skill = catalogue.by_id("fmt")
    assert (skill.name, skill.description) == ("formatter", "Format SQL queries.")
    assert skill.body == "# Use\n\nRun it."
    assert "name read from its 'name:' line" in catalogue.warnings[0]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks and FIFOs")
def test_links_in_a_skill_tree(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.txt", "root:x:0:0:root")
    shared = tmp_path / "elsewhere" / "shared-skill"
    write(
        shared / "SKILL.md", "---\nname: shared\ndescription: Linked in from elsewhere.\n---\nShared body.\n"
    )
    root = tmp_path / "skills"
    write(root / "own" / "SKILL.md", "---\nname: own\ndescription: Own skill.\n---\nOwn body.\n")
    write(root / "own" / "notes.md", "own notes")
    os.symlink(outside, root / "own" / "passwd.txt")  # a link out of the skill folder: not read
    os.symlink(root / "own" / "notes.md", root / "own" / "alias.md")  # a link inside it: read
    os.mkfifo(root / "own" / "pipe.txt")  # reading a FIFO would block forever
    os.symlink(shared, root / "shared-skill")  # ~/.claude/skills/NAME -> a checkout: a skill
    os.symlink(root, root / "own" / "loop")  # a link cycle must not hang the walk
    catalogue = load_quietly(root)
    assert catalogue.ids == ["own", "shared-skill"]
    assert catalogue.by_id("shared-skill").body == "Shared body."
    own = catalogue.by_id("own")
    assert "root:x" not in own.body
    assert own.metadata["files"] == ["alias.md", "notes.md"]
    assert own.metadata["files_skipped"] == [
        "passwd.txt (a link to a file outside the skill folder)",
        "pipe.txt (not a regular file)",
    ]


def test_same_skill_name_in_two_folders_warns(tmp_path: Path) -> None:
    # ids are folder paths, so two folders may hold skills with the same front-matter name; an agent
    # picks skills by name, so that is worth one warning naming both files
    write(tmp_path / "team-a" / "deploy" / "SKILL.md", "---\nname: deploy\ndescription: Deploy A.\n---\nA\n")
    write(tmp_path / "team-b" / "deploy" / "SKILL.md", "---\nname: deploy\ndescription: Deploy B.\n---\nB\n")
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(tmp_path)
    assert catalogue.ids == ["team-a/deploy", "team-b/deploy"]
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: skill name 'deploy' is used by 2 skills (team-a/deploy/SKILL.md, "
        "team-b/deploy/SKILL.md); their ids (folder paths) tell them apart"
    ]


# --------------------------------------------------------------------------- OpenAPI

DUPLICATE_IDS = """openapi: 3.0.3
info: {title: Shop, version: "1"}
paths:
  /orders:
    get: {operationId: list, summary: List orders, responses: {"200": {description: ok}}}
  /items:
    get: {operationId: list, summary: List items, responses: {"200": {description: ok}}}
    post: {operationId: addItem, summary: Add an item, responses: {"201": {description: ok}}}
"""


def test_duplicate_operation_ids_load_under_method_and_path(tmp_path: Path) -> None:
    # operationIds must be unique, but real specs repeat them; the whole catalogue used to be refused
    # ("1 duplicate skill id in shop.yaml: 'list'") though METHOD /path tells the operations apart
    spec = write(tmp_path / "shop.yaml", DUPLICATE_IDS)
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(spec)
    assert catalogue.ids == ["GET /orders", "GET /items", "addItem"]
    assert [s.name for s in catalogue] == ["list", "list", "addItem"]
    assert catalogue.by_id("GET /items").metadata["operationId"] == "list"
    assert [str(w.message) for w in caught] == [
        f"{spec}: operationId 'list' is used by 2 operations (GET /orders, GET /items); "
        "their ids are 'METHOD /path'"
    ]


SPLIT_SPEC = """openapi: 3.1.0
info: {title: Clinic, version: "1"}
paths:
  /owners:
    get:
      summary: List owners
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: 'schemas/common.yaml#/components/schemas/Owner'}
  /vets:
    get:
      summary: List vets
      responses:
        "200": {$ref: '../outside.yaml#/Vet'}
        "404": {$ref: 'https://example.com/errors.yaml#/NotFound'}
        "500": {$ref: 'schemas/missing.yaml#/Error'}
"""
COMMON = """components:
  schemas:
    Owner:
      type: object
      properties:
        name: {type: string, description: Owner full name}
        pets: {type: array, items: {$ref: '#/components/schemas/Pet'}}
        address: {$ref: 'address.json'}
    Pet:
      type: object
      properties:
        species: {type: string}
        owner: {$ref: '#/components/schemas/Owner'}
"""


def test_external_refs_to_local_files_are_followed_others_warn(tmp_path: Path) -> None:
    root = tmp_path / "api"
    spec = write(root / "clinic.yaml", SPLIT_SPEC)
    write(root / "schemas" / "common.yaml", COMMON)
    write(root / "schemas" / "address.json", '{"type": "object", "properties": {"city": {"type": "string"}}}')
    write(tmp_path / "outside.yaml", "Vet: {description: a vet}")
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(spec)
    owners = catalogue.by_id("GET /owners").body
    assert "- name (string): Owner full name" in owners
    assert "- species (string)" in owners  # a '#/...' ref inside common.yaml is read in common.yaml
    assert "(recursive: Owner)" in owners  # a cycle across files is cut
    assert "- city (string)" in owners  # a ref from common.yaml to a file beside it
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        f"{spec}: unresolved $ref '../outside.yaml#/Vet' (first in GET /vets; left as a marker: "
        f"a file outside the folder {root})",
        f"{spec}: unresolved $ref 'https://example.com/errors.yaml#/NotFound' (first in GET /vets; left "
        "as a marker: a URL, not fetched)",
        f"{spec}: unresolved $ref 'schemas/missing.yaml#/Error' (first in GET /vets; left as a marker: "
        "no such file)",
    ]


def test_folder_finds_minified_json_specs_and_keeps_ids_apart(tmp_path: Path) -> None:
    # a minified JSON spec ({"openapi":... on one line) and a spec whose 'openapi' key comes after a
    # large 'components' (keys sorted, as in Stripe's spec3.json) were not recognised in a folder
    op = '{"get": {"operationId": "list", "summary": "List", "responses": {"200": {"description": "ok"}}}}'
    minified = '{"openapi":"3.0.0","info":{"title":"Min","version":"1"},"paths":{"/a":' + op + "}}"
    write(tmp_path / "min.json", minified)
    padding = ", ".join(f'"S{i}": {{"type": "string", "description": "{"x" * 200}"}}' for i in range(400))
    sorted_keys = (
        '{"components": {"schemas": {' + padding + '}}, "info": {"title": "Sorted", "version": "1"}, '
        '"openapi": "3.0.0", "paths": {"/b": ' + op + "}}"
    )
    assert sorted_keys.index('"openapi"') > 65536
    write(tmp_path / "sorted.json", sorted_keys)
    # the same spec as YAML and JSON side by side: the prefix keeps the suffix so ids stay apart
    write(tmp_path / "pets.yaml", "openapi: 3.0.0\ninfo: {title: Pets}\npaths: {/c: " + op + "}\n")
    write(tmp_path / "pets.json", '{"openapi": "3.0.0", "info": {}, "paths": {"/c": ' + op + "}}")
    write(tmp_path / "data.json", '{"rows": [1, 2, 3]}')  # not a spec: left alone
    catalogue = load_quietly(tmp_path)
    assert catalogue.kind == "openapi"
    assert catalogue.ids == ["min:list", "pets.json:list", "pets.yaml:list", "sorted:list"]
    assert catalogue.warnings == []


# --------------------------------------------------------------------------- MCP


def test_mcp_page_with_next_cursor_warns_that_tools_are_missing(tmp_path: Path) -> None:
    # a saved tools/list response with nextCursor is one page: the other pages' tools are not in it
    tools = '[{"name": "a", "description": "A", "inputSchema": {"type": "object"}}]'
    path = write(
        tmp_path / "tools.json",
        '{"jsonrpc": "2.0", "id": 1, "result": {"tools": ' + tools + ', "nextCursor": "p2"}}',
    )
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(path)
    assert catalogue.ids == ["a"]
    assert [str(w.message) for w in caught] == [
        f"{path}: the tools/list result has a nextCursor ('p2'): it is one page, the tools of the later "
        "pages are not in the file"
    ]
    write(tmp_path / "last.json", '{"tools": ' + tools + ', "nextCursor": null}')
    assert load_catalogue(tmp_path / "last.json").warnings == []  # no warning emitted, none kept


def _tool(name: str, description: str = "Does it.") -> str:
    return json.dumps({"name": name, "description": description, "inputSchema": {"type": "object"}})


def test_folder_of_mcp_tool_snapshots_is_one_catalogue(tmp_path: Path) -> None:
    # github-mcp-server keeps one JSON tool per .snap file (pkg/github/__toolsnaps__): before, such a
    # folder was "no skill catalogue recognised" and had to be merged into one tools/list by hand
    write(tmp_path / "snaps" / "create_branch.snap", _tool("create_branch", "Create a branch."))
    write(tmp_path / "snaps" / "issues" / "add_comment.snap", _tool("add_comment", "Comment on an issue."))
    write(tmp_path / "snaps" / "server.json", json.dumps({"tools": [json.loads(_tool("get_me"))]}))
    write(tmp_path / "snaps" / "package.json", '{"name": "pkg", "version": "1.0.0"}')  # no tool: ignored
    write(tmp_path / "snaps" / ".cache" / "old.snap", _tool("stale"))  # hidden: ignored
    write(tmp_path / "snaps" / "README.md", "Tools of the server: see inputSchema.")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalogue = load_catalogue(tmp_path / "snaps")
    assert catalogue.kind == "mcp" and catalogue.warnings == []
    assert catalogue.ids == ["create_branch", "add_comment", "get_me"]  # by file path
    skill = catalogue.by_id("add_comment")
    assert skill.description == "Comment on an issue."
    assert skill.metadata["source"] == str(tmp_path / "snaps" / "issues" / "add_comment.snap")
    one = load_catalogue(tmp_path / "snaps" / "create_branch.snap")  # one tool file alone
    assert one.kind == "mcp" and one.ids == ["create_branch"]


def test_mcp_folder_tool_names_in_several_files_get_file_ids(tmp_path: Path) -> None:
    # two servers both offering "search": both kept, told apart by their files, one warning
    write(
        tmp_path / "github.json", json.dumps({"tools": [json.loads(_tool("search")), json.loads(_tool("a"))]})
    )
    write(
        tmp_path / "jira" / "tools.yaml",
        "tools:\n  - name: search\n    inputSchema: {type: object}\n    description: Search Jira.\n",
    )
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(tmp_path)
    assert catalogue.ids == ["github:search", "a", "jira/tools:search"]
    assert catalogue.by_id("jira/tools:search").description == "Search Jira."
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: tool name 'search' is in 2 files (github.json, jira/tools.yaml): their ids are "
        "'FILE:search'"
    ]


def test_mcp_folder_broken_tool_file_follows_on_error(tmp_path: Path) -> None:
    write(tmp_path / "good.snap", _tool("good"))
    write(tmp_path / "broken.snap", '{"name": "broken", "inputSchema": {')
    with pytest.warns(
        SkillWarning, match=r"skipped 1 bad file in .*\(broken\.snap; broken\.snap: invalid JSON"
    ):
        catalogue = load_catalogue(tmp_path)
    assert catalogue.ids == ["good"]
    with pytest.raises(CorpusFormatError, match=r"broken\.snap: invalid JSON"):
        load_catalogue(tmp_path, on_error="raise")
    (tmp_path / "good.snap").unlink()  # only a broken file naming a tool: no MCP folder
    with pytest.raises(CorpusFormatError, match="no skill catalogue recognised.*no MCP tool file"):
        load_catalogue(tmp_path)


def test_a_key_written_twice_in_a_tool_file_of_a_folder_is_on_the_catalogue_warnings(tmp_path: Path) -> None:
    # a single file's repeated key was on Catalogue.warnings, a folder's only in Python's warnings
    write(
        tmp_path / "a.json", '{"tools": [{"name": "x", "name": "y", "description": "Y", "inputSchema": {}}]}'
    )
    write(tmp_path / "b.yaml", "tools:\n- name: z\n  description: Z\n  description: Zed\n  inputSchema: {}\n")
    expected = [
        f"{tmp_path / 'a.json'}: duplicate key 'name' in one mapping: only its last value is read",
        f"{tmp_path / 'b.yaml'}: duplicate key 'description' at line 4 in one mapping: only its last value "
        "is read",
    ]
    for load in (load_catalogue, load_mcp):
        with pytest.warns(SkillWarning) as caught:
            catalogue = load(tmp_path)
        assert catalogue.ids == ["y", "z"]
        assert catalogue.warnings == expected
        assert [str(w.message) for w in caught] == expected  # said once each


def test_a_key_written_twice_in_a_file_a_spec_refers_to_is_on_the_catalogue_warnings(tmp_path: Path) -> None:
    write(
        tmp_path / "common.json",
        '{"Pet": {"properties": {"id": {"type": "integer"}, "id": {"type": "string"}}}}',
    )
    spec = write(
        tmp_path / "api.yaml",
        """openapi: 3.0.0
info: {title: T}
paths:
  /a:
    get:
      summary: s
      responses:
        '200':
          description: ok
          content: {application/json: {schema: {$ref: 'common.json#/Pet'}}}
""",
    )
    with pytest.warns(SkillWarning):
        catalogue = load_catalogue(spec)
    assert "- id (string)" in catalogue.by_id("GET /a").body
    assert catalogue.warnings == [
        f"{tmp_path / 'common.json'}: duplicate key 'id' in one mapping: only its last value is read"
    ]


def test_a_list_of_tools_with_one_bad_item_loads_the_others(tmp_path: Path) -> None:
    # one nameless tool (or a stray string) made the whole list "not a tool list": a folder left the
    # file out without a word, and the file alone was "not a skill catalogue"
    good = json.loads(_tool("good"))
    write(
        tmp_path / "dir" / "list.json", json.dumps([good, {"description": "no name", "inputSchema": {}}, "x"])
    )
    write(tmp_path / "dir" / "other.json", json.dumps({"tools": [json.loads(_tool("other"))]}))
    for path in (tmp_path / "dir", tmp_path / "dir" / "list.json"):
        with pytest.warns(
            SkillWarning, match=r"skipped 2 bad items in .*list\.json \(items 2, 3; item 2: tool "
        ):
            catalogue = load_catalogue(path)
        assert catalogue.kind == "mcp" and "good" in catalogue.ids
        with pytest.raises(CorpusFormatError, match=r"list\.json item 2: tool without a 'name'"):
            load_catalogue(path, on_error="raise")
    write(tmp_path / "people.json", json.dumps([{"name": "Ann"}, "x"]))  # no tool in it: still none
    with pytest.raises(CorpusFormatError, match="not a skill catalogue"):
        load_catalogue(tmp_path / "people.json")


def test_ref_to_a_deeply_nested_file_warns_instead_of_crashing(tmp_path: Path) -> None:
    write(tmp_path / "deep.json", "[" * 900 + "]" * 900)
    spec = "openapi: 3.0.0\ninfo: {title: D}\npaths: {/a: {get: {summary: s, responses: {'200': "
    spec += "{$ref: 'deep.json#/0'}}}}}\n"
    catalogue = load_quietly(write(tmp_path / "spec.yaml", spec))
    assert catalogue.ids == ["GET /a"]
    assert catalogue.warnings[0].endswith("left as a marker: nested too deeply)")


def test_deeply_nested_json_catalogue_is_one_error_line(tmp_path: Path) -> None:
    from ragroute.errors import CorpusFormatError

    path = write(tmp_path / "spec.json", '{"openapi": "3.0.0", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CorpusFormatError, match=r"spec\.json: invalid JSON \(nested too deeply\)"):
        load_catalogue(path)


def test_openapi_operations_under_other_keys_or_behind_refs_are_said(tmp_path: Path) -> None:
    # `fetch:` was skipped without a word, and an operation given as a $ref loaded as "no summary"
    spec = tmp_path / "api.yaml"
    spec.write_text(
        'openapi: 3.0.0\ninfo: {title: X, version: "1"}\npaths:\n'
        "  /b:\n    summary: fine\n    x-note: fine too\n    post: {operationId: mk, summary: make}\n"
        "    fetch: {operationId: weird, summary: not a method}\n"
        '  /t:\n    get: {$ref: "#/x-ops/getT"}\n'
        '  /u:\n    get: {$ref: "#/x-ops/getU"}\n'
        "x-ops:\n  getU: {operationId: getU, summary: Get a u}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_catalogue(spec)
    assert (
        [str(w.message) for w in caught]
        == catalogue.warnings
        == [
            f"{spec}: path /b: key 'fetch' is not an HTTP method (get, put, post, delete, options, head, "
            "patch, trace) nor a path item field: not loaded as an operation",
            f"{spec}: unresolved $ref '#/x-ops/getT' (first in GET /t; left as a marker)",
        ]
    )
    assert catalogue.ids == ["mk", "GET /t", "getU"]
    assert catalogue.by_id("getU").description == "Get a u"  # resolved
    assert catalogue.by_id("GET /t").description == "[unresolved $ref: #/x-ops/getT]"


def test_extension_keys_of_paths_are_no_path_items(tmp_path: Path) -> None:
    # `paths: {x-note: ...}` (an extension, which the Paths Object allows) was a bad path item: a
    # warning, and with on_error="raise" a valid spec refused
    spec = tmp_path / "api.yaml"
    spec.write_text(
        'openapi: 3.0.0\ninfo: {title: X, version: "1"}\npaths:\n  x-note: internal\n'
        "  x-group: {owner: team}\n  /a:\n    get: {operationId: getA, summary: Get an a}\n"
    )
    catalogue = load_catalogue(spec, on_error="raise")
    assert catalogue.ids == ["getA"]
    assert catalogue.warnings == []


def test_an_mcp_description_of_only_spaces_is_called_empty(tmp_path: Path) -> None:
    tools = tmp_path / "ws.json"
    tools.write_text('{"tools":[{"name":"e","description":"   ","inputSchema":{"type":"object"}}]}')
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(tools)
    assert [str(w.message) for w in caught] == [
        f"{tools}: tool 'e' has an empty description (only spaces) (loaded with an empty description)"
    ]
    assert catalogue.by_id("e").description == ""


def test_yaml_specs_read_yes_no_on_off_as_strings_and_percent_encoded_refs_resolve(tmp_path: Path) -> None:
    """Specs are YAML 1.2, where only true/false are booleans: read as YAML 1.1 until session 38, a
    country enum [SE, NO, DK] became [SE, false, DK], silently. A $ref's fragment is percent-decoded
    (#/components/schemas/Pet%20Record): it was left unresolved."""
    spec = write(
        tmp_path / "api.yaml",
        """openapi: 3.0.3
info: {title: Shop, version: "1"}
paths:
  /pets:
    get:
      operationId: listPets
      summary: List pets
      parameters:
        - {name: country, in: query, schema: {type: string, enum: [SE, NO, DK]}}
        - {name: vaccinated, in: query, schema: {type: string, enum: [yes, no, on, off]}}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Pet%20Record'}
components:
  schemas:
    Pet Record:
      type: object
      properties: {chipNumber: {type: string}}
""",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkillWarning)  # nothing to warn about
        skill = load_catalogue(spec).by_id("listPets")
    assert "SE, NO, DK" in skill.body and "yes, no, on, off" in skill.body
    assert "false" not in skill.body and "chipNumber" in skill.body


def test_skill_md_front_matter_reads_yes_and_no_as_text(tmp_path: Path) -> None:
    write(tmp_path / "norway" / "SKILL.md", "---\nname: no\ndescription: on\n---\nBody.\n")
    skill = load_quietly(tmp_path).by_id("norway")
    assert (skill.name, skill.description) == ("no", "on")


def test_one_skill_md_loaded_alone_leaves_out_a_nested_skills_files(tmp_path: Path) -> None:
    """The folder load left a nested skill's files out of the outer skill's body; loading the outer
    SKILL.md file alone took them in, its nested SKILL.md too (until session 38)."""
    write(tmp_path / "root" / "SKILL.md", "---\nname: root\ndescription: Outer skill.\n---\nOuter body.\n")
    write(tmp_path / "root" / "notes.md", "outer notes")
    write(tmp_path / "root" / "sub" / "SKILL.md", "---\nname: sub\ndescription: Inner skill.\n---\nInner.\n")
    write(tmp_path / "root" / "sub" / "notes.md", "inner notes")
    alone = load_quietly(tmp_path / "root" / "SKILL.md")
    in_folder = next(s for s in load_quietly(tmp_path / "root") if s.name == "root")
    assert alone.ids == [alone[0].id] and alone[0].body == in_folder.body
    assert (
        "outer notes" in alone[0].body
        and "inner notes" not in alone[0].body
        and "Inner." not in alone[0].body
    )


def test_a_folder_of_two_catalogue_kinds_says_which_files_it_left_out(tmp_path: Path) -> None:
    """An OpenAPI spec beside MCP tool files loaded the spec alone, and a spec beside a SKILL.md tree
    was ignored, without a word (until session 38); files inside a skill's folder are its side files."""
    mixed = tmp_path / "mixed"
    write(mixed / "shop.yaml", DUPLICATE_IDS)
    tools = [
        {"name": f"tool{i}", "description": "A tool.", "inputSchema": {"type": "object"}} for i in range(2)
    ]
    write(mixed / "tools.json", json.dumps({"tools": tools}))
    catalogue = load_quietly(mixed)
    assert catalogue.kind == "openapi" and len(catalogue) == 3
    assert any("1 MCP tool file (tools.json) is not loaded" in w for w in catalogue.warnings)
    skills = tmp_path / "skills"
    write(skills / "csv" / "SKILL.md", "---\nname: csv\ndescription: CSV files.\n---\nBody.\n")
    write(skills / "csv" / "tools.json", json.dumps({"tools": tools}))  # the skill's own file
    assert not any("not loaded" in w for w in load_quietly(skills).warnings)
    write(skills / "api" / "shop.yaml", DUPLICATE_IDS)
    catalogue = load_quietly(skills)
    assert catalogue.kind == "skill_md" and catalogue.ids == ["csv"]
    assert [w for w in catalogue.warnings if "not loaded" in w] == [
        f"{skills}: loaded as a SKILL.md catalogue: its 1 OpenAPI/Swagger spec file (api/shop.yaml) "
        "is not loaded; a catalogue is one kind: load them from their own folder or with --kind"
    ]


def test_openapi_fields_of_the_wrong_shape_are_warned_about(tmp_path: Path) -> None:
    """Parameters written as a mapping, responses as a list, a numeric operationId, info as a
    string: each was left out (or replaced) without a word until session 38."""
    spec = write(
        tmp_path / "odd.yaml",
        "openapi: 3.0.0\ninfo: Shop API\npaths:\n  /a:\n    get:\n      operationId: 42\n"
        "      summary: Get a\n      parameters: {a: 1}\n      responses: [1]\n"
        "  /b:\n    parameters: {b: 1}\n    get: {summary: Get b}\n",  # path-level: until session 56 unsaid
    )
    catalogue = load_quietly(spec)
    assert catalogue.ids == ["GET /a", "GET /b"]
    said = [w.removeprefix(f"{spec}: ") for w in catalogue.warnings]
    assert said == [
        "info is a string, not a mapping: the API title is left out",
        "GET /a: operationId is a number (42), not a string: the id is 'METHOD /path'",
        "GET /a: parameters is a mapping, not a list: left out",
        "GET /a: responses is a list, not a mapping: left out",
        "path /b: parameters is a mapping, not a list: left out",
    ]


def test_a_skills_jsonl_folder_says_which_files_beside_it_it_left_out(tmp_path: Path) -> None:
    """A folder holding skills.jsonl loaded it alone and said nothing of the SKILL.md skills, specs
    and MCP files beside it (until session 40)."""
    folder = tmp_path / "both"
    write(folder / "skills.jsonl", json.dumps({"_id": "x", "name": "x", "description": "X."}) + "\n")
    write(folder / "a" / "SKILL.md", "---\nname: a\ndescription: A.\n---\nBody.\n")
    write(folder / "a" / "tools.json", json.dumps({"tools": [{"name": "own", "inputSchema": {}}]}))
    write(folder / "api" / "shop.yaml", DUPLICATE_IDS)
    tools = {"tools": [{"name": "t", "description": "A tool.", "inputSchema": {"type": "object"}}]}
    write(folder / "mcp" / "tools.json", json.dumps(tools))
    catalogue = load_quietly(folder)
    assert catalogue.kind == "skills_jsonl" and catalogue.ids == ["x"]
    tail = "is not loaded; a catalogue is one kind: load them from their own folder or with --kind"
    assert [w for w in catalogue.warnings if "not loaded" in w] == [
        f"{folder}: loaded as a skills JSONL catalogue: its 1 SKILL.md file (a/SKILL.md) {tail}",
        f"{folder}: loaded as a skills JSONL catalogue: its 1 OpenAPI/Swagger spec file (api/shop.yaml) "
        f"{tail}",
        f"{folder}: loaded as a skills JSONL catalogue: its 1 MCP tool file (mcp/tools.json) {tail}",
    ]


def test_a_front_matter_key_written_twice_is_warned_about(tmp_path: Path) -> None:
    """YAML keeps the last of two `description:` lines; the SKILL.md loader said nothing (the
    OpenAPI loader warned) until session 40."""
    skill = write(
        tmp_path / "s" / "a" / "SKILL.md",
        "---\nname: a\ndescription: first description\ndescription: second description\n---\nB.\n",
    )
    catalogue = load_quietly(tmp_path / "s")
    assert catalogue[0].description == "second description"
    assert catalogue.warnings == [
        f"{skill}: front matter: duplicate key 'description' at line 4: only its last value is read"
    ]


def test_front_matter_numbers_keep_the_text_written(tmp_path: Path) -> None:
    """`name: 1.10` became the name '1.1', `description: 0x1F` the description '31' and
    `version: 1.10` the number 1.1 (until session 40): the text written is kept where YAML's number
    reads differently; numbers that read the same stay numbers."""
    root = tmp_path / "s"
    write(root / "a" / "SKILL.md", "---\nname: 1.10\ndescription: 0x1F\nversion: 1.10\nsize: 2\n---\nB.\n")
    write(
        root / "b" / "SKILL.md",
        "---\nname: b\ndescription: Uses 1_000 rows.\nratio: 0.5\nn: 1_000\n---\nB.\n",
    )
    a, b = load_quietly(root)
    assert (a.name, a.description) == ("1.10", "0x1F")
    assert a.metadata["version"] == "1.10" and a.metadata["size"] == 2
    assert b.metadata["ratio"] == 0.5 and b.metadata["n"] == "1_000"
    assert not load_quietly(root).warnings


def test_front_matter_numbers_inside_a_mapping_keep_the_text_written(tmp_path: Path) -> None:
    # the Agent Skills `metadata:` map (`version: 1.10`) read 1.1 and `0x1F` 31: only top-level
    # values kept the text written
    root = tmp_path / "s"
    write(
        root / "a" / "SKILL.md",
        "---\nname: a\ndescription: d\nmetadata:\n  version: 1.10\n  size: 2\n  tags: [0x1F, x]\n---\nB.\n",
    )
    (skill,) = load_quietly(root)
    assert skill.metadata["metadata"] == {"version": "1.10", "size": 2, "tags": ["0x1F", "x"]}


def test_a_file_not_named_skill_md_is_refused_as_one(tmp_path: Path) -> None:
    """`--kind skill_md` on tools.json built one skill of the raw JSON, named after its folder, with a
    "no front matter" warning (until session 40)."""
    tools = write(tmp_path / "t" / "tools.json", json.dumps({"tools": [{"name": "a", "inputSchema": {}}]}))
    with pytest.raises(CorpusFormatError) as caught:
        load_quietly(tools, kind="skill_md")
    assert str(caught.value) == (
        f"{tools}: not a SKILL.md file: a skill is read from a file named SKILL.md (give it, or a folder "
        "of skills)"
    )
    skill = write(tmp_path / "s" / "skill.md", "---\nname: s\ndescription: S.\n---\nB.\n")
    assert load_quietly(skill, kind="skill_md").ids == ["s"]  # the name is compared case-insensitively


def test_a_repeated_mcp_id_names_the_files_and_items_that_hold_it(tmp_path: Path) -> None:
    """A FILE:NAME id (a name in two files) that another tool is named, or a name written twice in
    one file, failed with the ids alone: no file, no item, no fix (until session 40)."""
    from ragroute.skills.records import DuplicateSkillError

    folder = tmp_path / "mcpdir"
    schema = {"type": "object"}
    write(
        folder / "github.json",
        json.dumps({"tools": [{"name": "search", "description": "Code.", "inputSchema": schema}]}),
    )
    write(
        folder / "jira" / "tools.json",
        json.dumps(
            {
                "tools": [
                    {"name": "search", "description": "Tickets.", "inputSchema": schema},
                    {"name": "github:search", "description": "Tricky.", "inputSchema": schema},
                ]
            }
        ),
    )
    fix = (
        "rename one of each in its file (the tool's 'name'; a name in several files has the id "
        "'FILE:NAME', which no tool may be named)"
    )
    with pytest.raises(DuplicateSkillError) as caught:
        load_quietly(folder)
    assert str(caught.value) == (
        f"1 duplicate skill id in {folder}: 'github:search' (github.json item 1, tool 'search'; "
        f"jira/tools.json item 2, tool 'github:search'); {fix}"
    )
    twice = write(
        tmp_path / "twice.json",
        json.dumps(
            {
                "tools": [
                    {"name": "a", "description": "A.", "inputSchema": schema},
                    {"name": "b", "description": "B.", "inputSchema": schema},
                    {"name": "a", "description": "A again.", "inputSchema": schema},
                ]
            }
        ),
    )
    with pytest.raises(DuplicateSkillError) as caught:
        load_quietly(twice)
    assert str(caught.value) == (
        f"1 duplicate skill id in {twice}: 'a' (twice.json item 1, tool 'a'; twice.json item 3, "
        f"tool 'a'); {fix}"
    )


def test_loader_messages_say_what_happened(tmp_path: Path) -> None:
    """A body of a heading alone gave an empty description under "the first paragraph is used" (until
    session 40) and an empty one after (until session 41: its headings describe it now); an MCP tool
    named 123 was "without a 'name'"; a skills.jsonl key outside the record was dropped without a
    word (until session 40)."""
    root = tmp_path / "s"
    skill = write(
        root / "h" / "SKILL.md",
        "---\nname: h\n---\n# Only a heading ##\n\n```\n# not a heading: code\n```\n## Usage\n",
    )
    bare = write(root / "c" / "SKILL.md", "---\nname: c\n---\n```\n# code only\n```\n")
    catalogue = load_quietly(root)
    assert [(s.id, s.description) for s in catalogue] == [("c", ""), ("h", "Only a heading; Usage")]
    assert catalogue.warnings == [
        f"{bare}: front matter has no 'description'; the body has no paragraph or heading either: the "
        "description is empty",
        f"{skill}: front matter has no 'description'; the body has no paragraph: its headings are used",
    ]
    tools = write(
        tmp_path / "tools.json",
        json.dumps({"tools": [{"name": 123, "inputSchema": {}}, {"name": "ok", "description": "Ok."}]}),
    )
    catalogue = load_quietly(tools)
    assert catalogue.ids == ["ok"] and any(
        "tool 'name' must be text, got int 123" in w for w in catalogue.warnings
    )
    jsonl = write(
        tmp_path / "j" / "skills.jsonl",
        '{"_id": "a", "name": "A", "tags": ["x"]}\n{"_id": "b", "name": "B"}\n'
        '{"_id": "c", "tags": [], "url": "u"}\n',
    )
    catalogue = load_quietly(jsonl)
    assert catalogue.ids == ["a", "b", "c"]
    assert catalogue.warnings[-1] == (
        f"{jsonl}: keys a skills record does not have are not loaded: 'tags' (lines 1, 3), 'url' (line 3); "
        "a record holds _id, name, description, body, metadata: put the others under 'metadata'"
    )


def test_a_long_chain_of_references_is_followed_with_a_look_up_per_reference():
    """A schema that is a reference to a reference ..., n deep: each was compared with every one
    followed before it (a list), n^2/2 comparisons (16,000 took 3 s to load). String comparisons
    of the references are counted, not time."""
    from ragroute.skills.schemas import RefResolver

    compared = 0

    class Ref(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            nonlocal compared
            compared += 1
            return str.__eq__(self, other)

    n = 600
    schemas = {f"A{k}": {"$ref": Ref(f"#/components/schemas/A{k + 1}")} for k in range(n)}
    schemas[f"A{n}"] = {"type": "object", "properties": {"x": {"type": "string"}}}
    resolver = RefResolver({"components": {"schemas": schemas}})
    target, name, marker = resolver.resolve({"$ref": Ref("#/components/schemas/A0")}, "GET /a")
    assert (target, name, marker) == (schemas[f"A{n}"], f"#/components/schemas/A{n}", None)
    assert compared < 10 * n, compared
    schemas[f"A{n}"] = {"$ref": Ref("#/components/schemas/A3")}  # a loop is still found
    target, name, marker = RefResolver({"components": {"schemas": schemas}}).resolve(schemas["A0"], "GET /a")
    assert (target, marker) == (None, "(recursive: A3)")


def test_a_path_item_ref_keeps_the_fields_beside_it(tmp_path: Path) -> None:
    # the `post:` beside `$ref: '#/paths/~1b'` was dropped without a word (until session 53)
    spec = tmp_path / "api.yaml"
    spec.write_text(
        'openapi: 3.1.0\ninfo: {title: X, version: "1"}\npaths:\n'
        "  /b:\n    get: {operationId: getB, summary: get b}\n    summary: the b\n"
        '  /a:\n    $ref: "#/paths/~1b"\n    summary: the a\n'
        "    post: {operationId: postA, summary: make an a}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_catalogue(spec)
    assert catalogue.ids == ["GET /b", "GET /a", "postA"]
    assert catalogue.by_id("postA").metadata["path"] == "/a"
    assert (
        [str(w.message) for w in caught]
        == catalogue.warnings
        == [
            f"{spec}: path /a: 'summary' given both beside its $ref and in the path item it refers to: "
            "the one beside the $ref is loaded",
            f"{spec}: operationId 'getB' is used by 2 operations (GET /b, GET /a); "
            "their ids are 'METHOD /path'",
        ]
    )


def test_a_description_beside_a_ref_overrides_the_targets() -> None:
    # OpenAPI 3.1 Reference Objects: `description` beside a `$ref` overrides the target's (until
    # session 53 the target's was shown); likewise beside a schema's `$ref`, as for a property
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "X"},
        "paths": {
            "/pets": {
                "post": {
                    "operationId": "addPet",
                    "summary": "add",
                    "parameters": [{"$ref": "#/components/parameters/Limit", "description": "Pets to add"}],
                    "requestBody": {"$ref": "#/components/requestBodies/Pet", "description": "The new pet"},
                    "responses": {
                        "200": {"$ref": "#/components/responses/Pet", "description": "The pet added"},
                        "400": {
                            "description": "bad",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Err", "description": "Why not"}
                                }
                            },
                        },
                    },
                }
            }
        },
        "components": {
            "parameters": {"Limit": {"name": "limit", "in": "query", "description": "Page size"}},
            "requestBodies": {"Pet": {"description": "A pet", "content": {"application/json": {}}}},
            "responses": {"Pet": {"description": "A pet"}},
            "schemas": {"Err": {"type": "object", "description": "An error"}},
        },
    }
    body = skills_from_openapi(spec, "x.yaml", WarningLog())[0].body
    assert "- limit (query, any): Pets to add" in body
    assert "Request body (application/json): The new pet" in body
    assert "- 200: The pet added" in body
    assert "    object Err: Why not" in body
    assert "Page size" not in body and "A pet" not in body and "An error" not in body


def test_a_schemas_const_and_examples_are_rendered() -> None:
    # `const` and JSON Schema's `examples` (OpenAPI 3.1, MCP) were left out until session 53
    tool = {
        "name": "feed",
        "description": "feed a pet",
        "inputSchema": {
            "type": "object",
            "properties": {
                "kind": {"const": "dog"},
                "food": {"type": "string", "examples": ["kibble", "fish"]},
                "size": {"type": "string", "example": "big", "examples": ["small"]},
            },
        },
    }
    body = skills_from_mcp([tool], "t.json", WarningLog())[0].body
    assert "- kind (any) [const: dog]" in body
    assert "- food (string) [example: kibble]" in body
    assert "- size (string) [example: big]" in body

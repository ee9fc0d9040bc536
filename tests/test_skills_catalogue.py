"""Skill catalogue loaders: SKILL.md trees, MCP tool lists, OpenAPI 3 / Swagger 2, SKILLS JSONL.

Fixtures live in tests/data/skills/; error cases are written to tmp_path.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from ragroute.errors import CorpusFormatError, RagrouteError
from ragroute.loaders import CorpusWarning, LoadReport
from ragroute.skills import (
    Catalogue,
    DuplicateSkillError,
    Skill,
    SkillWarning,
    WarningLog,
    detect_catalogue,
    load_catalogue,
    load_mcp,
    load_openapi,
    load_skill_md,
    load_skills_jsonl,
    skills_from_mcp,
    skills_from_openapi,
)

DATA = Path(__file__).parent / "data" / "skills"
TOOLLENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "toollens" / "skills.jsonl"


def load_quietly(path: Path, **kwargs) -> Catalogue:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkillWarning)
        return load_catalogue(path, **kwargs)


# --------------------------------------------------------------------------- records


def test_skill_document_keeps_every_field() -> None:
    skill = Skill(
        "s1", "Weather", "Forecast for a city.", "params: city", {"category": "travel", "tags": ["a", "b"]}
    )
    doc = skill.to_document()
    assert (doc.id, doc.title) == ("s1", "Weather")
    assert doc.text == "Forecast for a city.\n\nparams: city"
    assert doc.metadata["category"] == "travel"
    assert doc.metadata["skill"] == {
        "name": "Weather",
        "description": "Forecast for a city.",
        "body_start": 22,
    }
    assert Skill.from_document(doc) == skill
    assert skill.field_text("name") == "Weather"
    assert skill.field_text("body") == "params: city"
    assert skill.field_text("text") == "Weather | Forecast for a city. | params: city"
    assert skill.field_text("tags") == "a, b"
    assert skill.field_text("missing") == ""
    assert Skill.from_record(skill.to_record()) == skill
    # empty parts leave no separators behind, and the round trip still holds
    bare = Skill("s2", "Bare", "", "only a body")
    assert bare.to_document().text == "only a body"
    assert Skill.from_document(bare.to_document()) == bare


def test_catalogue_lookup_and_documents() -> None:
    skills = [Skill("a", "A", "first"), Skill("b", "B", "second")]
    catalogue = Catalogue(skills, source="x.jsonl", kind="skills_jsonl", warnings=["w"])
    assert len(catalogue) == 2 and catalogue.ids == ["a", "b"]
    assert catalogue[1].name == "B" and catalogue.by_id("a").description == "first"
    assert "a" in catalogue and "z" not in catalogue and catalogue.get("z") is None
    assert [d.id for d in catalogue.documents()] == ["a", "b"]
    assert catalogue.source == Path("x.jsonl") and catalogue.warnings == ["w"]
    with pytest.raises(KeyError, match="no skill 'z'"):
        catalogue.by_id("z")


def test_duplicate_ids_raise_one_error_listing_them() -> None:
    with pytest.raises(DuplicateSkillError) as caught:
        load_catalogue(DATA / "duplicates")
    message = str(caught.value)
    assert isinstance(caught.value, RagrouteError)
    assert "2 duplicate skill ids" in message and "'a', 'b'" in message and "'c'" not in message
    many = [Skill(f"id{i}", "n") for i in range(15)] * 2
    with pytest.raises(DuplicateSkillError, match=r"15 duplicate skill ids: 'id0', .*'id9' and 5 more$"):
        Catalogue(many)


# --------------------------------------------------------------------------- SKILL.md


def test_skill_md_tree_finds_nested_skills_and_side_files() -> None:
    catalogue = load_quietly(DATA / "skill_md")
    assert catalogue.kind == "skill_md" and detect_catalogue(DATA / "skill_md") == "skill_md"
    # sorted by folder; the hidden folder is ignored
    assert catalogue.ids == ["broken-yaml", "colon-desc", "no-front-matter", "pdf", "pdf/forms"]
    pdf = catalogue.by_id("pdf")
    assert pdf.name == "pdf-tools"
    assert pdf.description == "Extract text and tables from PDF files, merge and split documents."
    assert pdf.metadata["license"] == "Apache-2.0" and pdf.metadata["allowed-tools"] == ["Read", "Bash"]
    assert pdf.metadata["path"] == "pdf/SKILL.md"
    # SKILL.md names scripts/extract.py, so it comes first; then documentation
    assert pdf.metadata["files"] == ["scripts/extract.py", "reference.md"]
    assert pdf.metadata["files_skipped"] == ["assets/table.csv (binary)"]
    assert pdf.body.startswith("# PDF tools")
    assert "[file: reference.md]\n# Reference\n\npypdf reads encrypted documents" in pdf.body
    assert "[file: scripts/extract.py]" in pdf.body and "PdfReader(sys.argv[1])" in pdf.body
    assert "Checkbox fields" not in pdf.body  # belongs to the nested skill
    assert "name: pdf-tools" not in pdf.body  # front matter is not body
    forms = catalogue.by_id("pdf/forms")
    assert (forms.name, forms.metadata["files"]) == ("pdf-forms", ["fields.txt"])
    assert forms.body.endswith("[file: fields.txt]\nCheckbox fields take /Yes or /Off as values.")


def test_broken_front_matter_is_loaded_with_a_warning_naming_the_file() -> None:
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(DATA / "skill_md")
    emitted = [str(w.message) for w in caught]
    assert emitted == catalogue.warnings and len(emitted) == 4
    hidden, broken, colon, missing = emitted
    assert hidden.startswith(str(DATA / "skill_md" / ".hidden-skill") + ": folder left out (a hidden folder")
    assert broken.startswith(str(DATA / "skill_md" / "broken-yaml" / "SKILL.md") + ": broken front matter")
    assert "invalid YAML" in broken and "at line 3" in broken and "name from the folder" in broken
    skill = catalogue.by_id("broken-yaml")
    assert skill.name == "broken-yaml"
    assert skill.description == "Converts spreadsheets between CSV and Excel formats."
    assert skill.metadata["front_matter_raw"] == "name: [unclosed\ntags: {a: 1\n"
    assert "More details here." in skill.body
    # an unquoted colon in the description: YAML refuses it, the plain lines are read instead
    assert "colon-desc/SKILL.md" in colon and "read from its 'description:' line" in colon
    salvaged = catalogue.by_id("colon-desc")
    assert salvaged.name == "git-helper"
    assert salvaged.description == "Use when: the user wants to rebase, squash or bisect commits"
    assert "no YAML front matter" in missing
    weather = catalogue.by_id("no-front-matter")
    assert weather.description == "Look up the weather forecast for a city and date."
    assert caught[0].filename == __file__  # points at the caller, not into the package


def test_skill_md_missing_description_and_single_file(tmp_path: Path) -> None:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "SKILL.md").write_text(
        "---\nname: my-tool\nversion: 2\n---\n\nDoes one thing well.\n"
    )
    with pytest.warns(SkillWarning, match=r"tool/SKILL\.md: front matter has no 'description'"):
        catalogue = load_skill_md(tmp_path)
    skill = catalogue.by_id("tool")
    assert (skill.name, skill.description, skill.metadata["version"]) == (
        "my-tool",
        "Does one thing well.",
        2,
    )
    one = load_quietly(DATA / "skill_md" / "pdf" / "forms" / "SKILL.md")
    assert one.ids == ["forms"] and one[0].name == "pdf-forms"


def test_skill_md_folders_left_out_are_named_with_how_many_skills_they_held(tmp_path: Path) -> None:
    # SKILL.md files under build/, dist/, venv/ or a hidden folder were dropped without a word
    for folder in ("deploy", "build", "dist/a", "dist/b", ".hidden", "venv", "node_modules/x"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "SKILL.md").write_text(
            f"---\nname: s\ndescription: The {folder} skill.\n---\nbody\n"
        )
    (tmp_path / "__pycache__").mkdir()  # no SKILL.md in it: nothing to say
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_skill_md(tmp_path)
    assert catalogue.ids == ["deploy"]
    said = sorted(str(w.message) for w in caught if issubclass(w.category, SkillWarning))
    assert said == sorted(catalogue.warnings) and len(said) == 5
    assert (
        f"{tmp_path / 'dist'}: folder left out (a build or vendored folder, not searched for skills): its 2 "
        in "".join(said)
    )
    assert any(
        m.startswith(f"{tmp_path / '.hidden'}: folder left out (a hidden folder") and "its 1 SKILL.md" in m
        for m in said
    )
    assert not any("__pycache__" in m for m in said)
    only = tmp_path / "only"
    (only / "build").mkdir(parents=True)
    (only / "build" / "SKILL.md").write_text("---\nname: b\ndescription: d\n---\n")
    with pytest.raises(CorpusFormatError, match="only in folders that are not searched: build"):
        load_skill_md(only)


def test_skill_md_folder_left_out_is_counted_in_a_bounded_walk(tmp_path: Path, monkeypatch) -> None:
    # every load walked the whole of a node_modules or .git beside the catalogue to count its SKILL.md
    # files; past the cap the walk stops and the warning says "at least"
    import importlib
    import os

    module = importlib.import_module("ragroute.skills.load_skill_md")  # the package exports the function
    monkeypatch.setattr(module, "MAX_SKIPPED_ENTRIES", 20, raising=False)
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "SKILL.md").write_text("---\nname: t\ndescription: d\n---\n")
    vendored = tmp_path / "node_modules"
    (vendored / "pkg").mkdir(parents=True)
    (vendored / "SKILL.md").write_text("---\nname: v\ndescription: d\n---\n")
    for i in range(200):
        (vendored / "pkg" / f"f{i}.js").write_text("")
    visited = []
    scandir = os.scandir

    class Counting:
        """An ``os.scandir`` iterator noting each entry below ``vendored`` it yields."""

        def __init__(self, path) -> None:
            self.entries = scandir(path)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc) -> None:
            self.entries.close()

        def close(self) -> None:
            self.entries.close()

        def __iter__(self) -> Counting:
            return self

        def __next__(self) -> os.DirEntry:
            entry = next(self.entries)
            if Path(entry.path).parent.is_relative_to(vendored):
                visited.append(entry.path)
            return entry

    monkeypatch.setattr(os, "scandir", Counting)
    with pytest.warns(SkillWarning, match="folder left out"):
        catalogue = load_skill_md(tmp_path)
    assert catalogue.ids == ["tool"] and len(visited) <= 21
    assert catalogue.warnings == [
        f"{vendored}: folder left out (a build or vendored folder, not searched for skills): at least 1 "
        "SKILL.md file in it (counted in its first 20 entries) is not loaded; move them (or link them "
        "under another name) to load them"
    ]


def test_skill_md_folder_left_out_is_counted_without_following_links(tmp_path: Path) -> None:
    # a link loop in a folder left out, or a link out of the tree, is not followed when counting
    root, outside = tmp_path / "skills", tmp_path / "outside"
    for folder in (root / "tool", root / "build" / "pkg", outside / "a"):
        folder.mkdir(parents=True)
        (folder / "SKILL.md").write_text("---\nname: s\ndescription: d\n---\n")
    (root / "build" / "pkg" / "loop").symlink_to(root / "build", target_is_directory=True)
    (root / "build" / "out").symlink_to(outside, target_is_directory=True)
    (root / ".linked").symlink_to(outside, target_is_directory=True)  # a linked folder left out: not walked
    with pytest.warns(SkillWarning, match="folder left out"):
        catalogue = load_skill_md(root)
    assert catalogue.ids == ["tool"]
    assert catalogue.warnings == [
        f"{root / 'build'}: folder left out (a build or vendored folder, not searched for skills): its 1 "
        "SKILL.md file is not loaded; move them (or link them under another name) to load them"
    ]


def test_skill_md_side_files_are_capped(tmp_path: Path) -> None:
    from ragroute.skills.load_skill_md import MAX_FILE_CHARS

    skill_dir = tmp_path / "big"
    skill_dir.mkdir()
    (skill_dir / "SKILL.md").write_text("---\nname: big\ndescription: d\n---\nbody\n")
    (skill_dir / "notes.md").write_text("x" * (MAX_FILE_CHARS + 500))
    (skill_dir / "image.png").write_bytes(b"\x89PNG\x00\x00")
    skill = load_skill_md(tmp_path)[0]
    assert f"[... notes.md cut at {MAX_FILE_CHARS} characters]" in skill.body
    assert skill.body.count("x") == MAX_FILE_CHARS
    assert skill.metadata["files"] == ["notes.md"]  # the .png is not a text file worth indexing


def test_skill_md_licence_texts_are_not_indexed(tmp_path: Path) -> None:
    # anthropics/skills: 16 of 17 skills carry a LICENSE.txt (12 the 10-11k-character Apache
    # licence), canvas-design also 27 font licences (*-OFL.txt); they filled the body and its
    # 100,000-character budget instead of the skill's own files
    skill_dir = tmp_path / "canvas"
    (skill_dir / "fonts").mkdir(parents=True)
    (skill_dir / "scripts").mkdir()
    (skill_dir / "SKILL.md").write_text("---\nname: canvas\ndescription: Make posters.\n---\nDraw.\n")
    (skill_dir / "LICENSE.txt").write_text("Apache License Version 2.0, January 2004\n")
    (skill_dir / "LICENSE").write_text("MIT License\n")
    (skill_dir / "fonts" / "Lora-OFL.txt").write_text("SIL OPEN FONT LICENSE Version 1.1\n")
    (skill_dir / "fonts" / "Lora-Regular.ttf").write_bytes(b"\x00\x01\x00\x00")
    (skill_dir / "scripts" / "license_check.py").write_text("print('checks headers')\n")
    (skill_dir / "notes.md").write_text("Posters are 24x36 inches.\n")
    skill = load_skill_md(tmp_path)[0]
    assert "License" not in skill.body and "LICENSE" not in skill.body
    assert skill.metadata["files"] == ["notes.md", "scripts/license_check.py"]
    assert sorted(skill.metadata["files_skipped"]) == [
        "LICENSE (licence text)",
        "LICENSE.txt (licence text)",
        "fonts/Lora-OFL.txt (licence text)",
    ]


def test_skill_md_files_the_skill_names_fill_the_budget_first(tmp_path: Path, monkeypatch) -> None:
    # anthropics/skills claude-api: 65 side files, 172k characters; alphabetical order kept
    # csharp/ and go/ and dropped the shared/*.md files its SKILL.md sends the reader to
    import importlib

    module = importlib.import_module("ragroute.skills.load_skill_md")  # the package exports the function

    monkeypatch.setattr(module, "MAX_SIDE_CHARS", 100)
    skill_dir = tmp_path / "api"
    for folder in ("csharp", "shared", "scripts"):
        (skill_dir / folder).mkdir(parents=True)
    (skill_dir / "SKILL.md").write_text(
        "---\nname: api\ndescription: The API.\n---\n"
        "Model ids: read `shared/Models.md`. To count tokens run ./scripts/count.py.\n"
    )
    (skill_dir / "csharp" / "README.md").write_text("c" * 60)
    (skill_dir / "shared" / "models.md").write_text("m" * 60)
    (skill_dir / "scripts" / "count.py").write_text("t" * 60)
    (skill_dir / "scripts" / "other.py").write_text("o" * 60)
    skill = load_skill_md(tmp_path)[0]
    # named (in the order named, case-insensitively), then documentation, then the rest
    assert skill.metadata["files"] == ["shared/models.md", "scripts/count.py"]
    assert skill.metadata["files_skipped"] == [
        "csharp/README.md (over the 100-character limit per skill)",
        "scripts/other.py (over the 100-character limit per skill)",
    ]
    assert skill.body.index("[file: shared/models.md]") < skill.body.index("[file: scripts/count.py]")
    assert module.side_file_order(
        [skill_dir / "scripts" / "other.py", skill_dir / "csharp" / "README.md"], skill_dir, ""
    ) == [skill_dir / "csharp" / "README.md", skill_dir / "scripts" / "other.py"]


def test_skill_md_not_utf8_follows_on_error(tmp_path: Path) -> None:
    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
    (tmp_path / "good" / "SKILL.md").write_text("---\nname: good\ndescription: fine\n---\n")
    (tmp_path / "bad" / "SKILL.md").write_bytes(b"---\nname: bad\n---\n\xff\xfe\n")
    report = LoadReport()
    with pytest.warns(
        SkillWarning, match=r"skipped 1 bad file in .* \(bad/SKILL\.md; .*invalid UTF-8 on line 4"
    ):
        catalogue = load_skill_md(tmp_path, report=report)
    assert catalogue.ids == ["good"] and report.n_skipped == 1
    with pytest.raises(CorpusFormatError, match=r"bad/SKILL\.md: invalid UTF-8"):
        load_skill_md(tmp_path, on_error="raise")


# --------------------------------------------------------------------------- MCP


def test_mcp_tools_list_with_schema_and_a_tool_lacking_description() -> None:
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(DATA / "mcp" / "tools.json")
    source = str(DATA / "mcp" / "tools.json")
    assert catalogue.kind == "mcp" and catalogue.ids == ["search_issues", "create_branch"]
    assert catalogue.warnings == [str(w.message) for w in caught]
    assert catalogue.warnings == [
        f"{source}: tool 'create_branch' has no description (loaded with an empty description)",
        f"{source}: tool 'create_branch': unresolved $ref '#/$defs/Missing' in inputSchema"
        " (left as a marker)",
        f"skipped 1 bad item in {source} (item 3; item 3: tool without a 'name')",
    ]
    search = catalogue.by_id("search_issues")
    assert search.description == "Search GitHub issues by query and state."
    assert search.metadata["title"] == "Search issues" and search.metadata["annotations"] == {
        "readOnlyHint": True
    }
    assert search.metadata["inputSchema"]["required"] == ["query"]
    lines = search.body.splitlines()
    assert "- query (string, required): Search words" in lines
    assert "- state (string) [one of: open, closed; default: open]" in lines
    assert "- filter (object Filter): Narrow the results" in lines
    assert "  - label (string): Issue label" in lines  # the $defs reference is resolved
    assert '"$defs": {' in search.body  # the schema JSON follows the readable lines
    branch = catalogue.by_id("create_branch")
    assert branch.description == ""
    assert "- options ([unresolved $ref: #/$defs/Missing])" in branch.body.splitlines()


def test_mcp_tool_without_parameters_says_none() -> None:
    tools = [
        {"name": "get_me", "description": "Who am I.", "inputSchema": {"type": "object", "properties": {}}}
    ]
    skill = load_mcp("tools.json", data={"tools": tools})[0]
    assert skill.body.startswith("Parameters:\n(none)\n\ninputSchema JSON:")


def test_mcp_tool_without_input_schema_warns(tmp_path: Path) -> None:
    tools = [
        {"name": "ping", "description": "Checks the server."},
        {"name": "echo", "description": "Echoes.", "inputSchema": {"type": "object"}},
    ]
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": tools}))
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_mcp(path)
    assert catalogue.ids == ["ping", "echo"]
    assert catalogue.warnings == [f"{path}: tool 'ping' has no inputSchema"]
    assert [str(w.message) for w in caught] == catalogue.warnings
    ping = catalogue.by_id("ping")
    assert ping.body == "" and "inputSchema" not in ping.metadata


def test_mcp_tool_without_name_raises_with_on_error_raise() -> None:
    with pytest.raises(CorpusFormatError, match=r"tools\.json item 3: tool without a 'name'"):
        load_quietly(DATA / "mcp" / "tools.json", on_error="raise")


@pytest.mark.parametrize(
    ("name", "ids"),
    [("rpc.json", ["get_time"]), ("bare.json", ["echo", "add"])],
    ids=["jsonrpc", "bare-list"],
)
def test_mcp_other_shapes(name: str, ids: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalogue = load_catalogue(DATA / "mcp" / name)
    assert catalogue.kind == "mcp" and catalogue.ids == ids and catalogue.warnings == []
    assert catalogue[0].description.endswith(".")


def test_warnings_are_capped_but_all_kept(tmp_path: Path) -> None:
    tools = [{"name": f"t{i}", "inputSchema": {"type": "object"}} for i in range(25)]
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": tools}))
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_mcp(path)
    assert len(catalogue.warnings) == 25
    assert len(caught) == 21 and "5 more warnings not shown" in str(caught[-1].message)
    assert issubclass(SkillWarning, CorpusWarning)
    log = WarningLog(emit_cap=0)
    log.warn("f.json", "quiet")
    assert log.messages == ["f.json: quiet"]


# --------------------------------------------------------------------------- OpenAPI / Swagger


def test_openapi3_one_skill_per_operation_with_refs_resolved() -> None:
    path = DATA / "openapi" / "petstore.yaml"
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_openapi(path)
    assert detect_catalogue(path) == "openapi"
    assert catalogue.ids == ["listPets", "createPet", "GET /pets/{petId}", "deletePet", "listCategories"]
    assert catalogue.warnings == [str(w.message) for w in caught]
    assert catalogue.warnings == [
        f"{path}: unresolved $ref '#/components/schemas/Owner' (first in GET /pets; left as a marker)",
        f"{path}: operation DELETE /pets/{{petId}} has no summary or description",
    ]
    list_pets = catalogue.by_id("listPets")
    assert list_pets.metadata == {
        "method": "GET",
        "path": "/pets",
        "operationId": "listPets",
        "tags": ["pets"],
        "api": "Petstore",
        "source": str(path),
        "spec_version": "3.0.3",
    }
    assert list_pets.description == "List all pets"
    lines = list_pets.body.splitlines()
    assert lines[:3] == ["GET /pets", "API: Petstore", "Tags: pets"]
    assert "Returns the pets of the store, a page at a time." in lines
    assert "- limit (query, integer (int32)): How many items to return at one time (max 100)" in lines
    assert "- 200 (application/json): A page of pets" in lines
    assert "    array of object Pet" in lines
    assert "      - name (string, required): The pet's name" in lines
    assert "      - owner ([unresolved $ref: #/components/schemas/Owner])" in lines  # marker, op kept
    assert "- default (application/json): Unexpected error" in lines  # a $ref'd response
    create = catalogue.by_id("createPet").body.splitlines()
    assert "Request body (application/json), required:" in create
    assert (
        "    - id (integer (int64), required)" in create and "    - vaccinated (boolean)" in create
    )  # allOf
    by_path = catalogue.by_id("GET /pets/{petId}")
    assert by_path.name == "GET /pets/{petId}" and "operationId" not in by_path.metadata
    assert "- petId (path, string, required): The id of the pet" in by_path.body  # path-level parameter
    tree = catalogue.by_id("listCategories").body.splitlines()
    assert "      - children (array of (recursive: Category))" in tree  # the cycle is cut
    assert "      - parent (recursive: Category)" in tree  # a marker is not bracketed twice


def test_swagger2_json() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalogue = load_catalogue(DATA / "openapi" / "petstore2.json")
    assert catalogue.kind == "openapi" and catalogue.ids == ["addPet", "findPetsByStatus"]
    add = catalogue.by_id("addPet")
    assert (add.metadata["method"], add.metadata["path"], add.metadata["spec_version"]) == (
        "POST",
        "/pets",
        "2.0",
    )
    lines = add.body.splitlines()
    assert "Request body (application/json), required: body - Pet to add" in lines
    assert "    - name (string, required) [example: doggie]" in lines
    find = catalogue.by_id("findPetsByStatus")
    assert find.description == "Multiple status values can be given."
    assert "- status (query, array of string, required) [one of: available, sold]" in find.body.splitlines()
    assert (
        "      - status (string): pet status in the store [one of: available, sold]" in find.body.splitlines()
    )


def test_openapi_folder_prefixes_ids_with_the_spec() -> None:
    catalogue = load_quietly(DATA / "openapi")
    assert catalogue.kind == "openapi" and len(catalogue) == 7
    assert catalogue.ids[0] == "petstore:listPets" and catalogue.ids[-1] == "petstore2:findPetsByStatus"
    assert catalogue.by_id("petstore2:addPet").name == "addPet"


def test_openapi_schema_text_is_depth_and_length_capped() -> None:
    deep: dict = {"type": "string"}
    for i in range(12):
        deep = {"type": "object", "properties": {f"level{i}": deep}}
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(500)}}
    small = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    spec = {
        "openapi": "3.1.0",
        "paths": {
            "/deep": {"post": {"requestBody": {"content": {"application/json": {"schema": deep}}}}},
            "/wide": {
                "put": {
                    "summary": "w",
                    "requestBody": {"content": {"a/b": {"schema": wide}}},
                    "responses": {"200": {"description": "done", "content": {"a/b": {"schema": small}}}},
                }
            },
        },
    }
    log = WarningLog()
    with pytest.warns(SkillWarning, match="POST /deep has no summary"):
        skills = skills_from_openapi(spec, "inline", log)
    assert log.messages == ["inline: operation POST /deep has no summary or description"]
    deep_body, wide_lines = skills[0].body, skills[1].body.splitlines()
    # the body's object is level 1, then five levels of properties, then the cut
    assert "            - level7 (object)\n              ... (nested deeper than 6 levels)" in deep_body
    assert "level6" not in deep_body
    # the request body is cut at 100 schema lines, and the response still gets its own
    assert "... (schema text truncated)" in wide_lines
    assert "    - p98 (string)" in wide_lines and "    - p99 (string)" not in wide_lines
    assert wide_lines[-3:] == ["- 200 (a/b): done", "    object", "      - ok (boolean)"]


def _spec_returning(schemas: dict, top: str) -> dict:
    schema = {"$ref": f"#/components/schemas/{top}"}
    response = {"description": "ok", "content": {"application/json": {"schema": schema}}}
    return {
        "openapi": "3.0.0",
        "paths": {"/a": {"get": {"summary": "s", "responses": {"200": response}}}},
        "components": {"schemas": schemas},
    }


@pytest.mark.parametrize("shape", ["oneOf", "anyOf"])
def test_schema_options_of_shared_options_stay_small(shape: str) -> None:
    # S0: oneOf [S1, S1], S1: oneOf [S2, S2], ...: each option's summary repeated its options' in
    # full, 2**depth of them (16 levels: a 10 MB body; 30 levels never finished)
    schemas: dict = {f"S{i}": {shape: [{"$ref": f"#/components/schemas/S{i + 1}"}] * 2} for i in range(16)}
    schemas["S16"] = {"type": "string"}
    body = skills_from_openapi(_spec_returning(schemas, "S0"), "inline", WarningLog())[0].body
    assert len(body) < 100_000
    assert "S0: one of S1: one of" in body


@pytest.mark.parametrize("link", ["items", "allOf", "oneOf"])
def test_a_long_chain_of_schema_references_is_cut_not_a_recursion_error(link: str) -> None:
    # S0 -> S1 -> ... -> S2000 through array items, allOf or oneOf: a RecursionError traceback
    def refer(i: int) -> dict:
        ref = {"$ref": f"#/components/schemas/S{i + 1}"}
        return {"type": "array", "items": ref} if link == "items" else {link: [ref]}

    schemas = {f"S{i}": refer(i) for i in range(2000)}
    schemas["S2000"] = {"type": "string"}
    body = skills_from_openapi(_spec_returning(schemas, "S0"), "inline", WarningLog())[0].body
    assert body.startswith("GET /a") and "- 200 (application/json): ok" in body
    assert len(body) < 100_000


def test_an_openapi3_parameter_with_a_schema_per_media_type_keeps_its_type() -> None:
    # `content: {application/json: {schema: ...}}` instead of `schema:`: the line read "(query, any)"
    parameter = {
        "name": "filter",
        "in": "query",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Filter"}}},
    }
    spec = {
        "openapi": "3.0.0",
        "paths": {"/a": {"get": {"summary": "s", "parameters": [parameter], "responses": {}}}},
        "components": {"schemas": {"Filter": {"type": "object", "properties": {"x": {"type": "string"}}}}},
    }
    body = skills_from_openapi(spec, "inline", WarningLog())[0].body
    assert "- filter (query, object Filter)" in body.splitlines()


def test_an_openapi_parameter_reads_like_the_same_mcp_property() -> None:
    # a description written only in the parameter's schema, and an object parameter's properties,
    # were left out of the body: the MCP tool's body named them, the same operation's did not
    schemas = {
        "city": {"type": "string", "description": "City name"},
        "filter": {"$ref": "#/components/schemas/Filter"},
    }
    spec = {
        "openapi": "3.1.0",
        "paths": {
            "/weather": {
                "get": {
                    "operationId": "get_weather",
                    "summary": "Weather",
                    "parameters": [
                        {"name": "city", "in": "query", "required": True, "schema": schemas["city"]},
                        {"name": "filter", "in": "query", "style": "deepObject", "schema": schemas["filter"]},
                    ],
                }
            }
        },
        "components": {
            "schemas": {
                "Filter": {"type": "object", "properties": {"lang": {"type": "string", "enum": ["en"]}}}
            }
        },
    }
    lines = skills_from_openapi(spec, "inline", WarningLog())[0].body.splitlines()
    assert lines[lines.index("Parameters:") + 1 :][:3] == [
        "- city (query, string, required): City name",
        "- filter (query, object Filter)",
        "  - lang (string) [one of: en]",
    ]
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "inputSchema": {
            "type": "object",
            "properties": schemas,
            "required": ["city"],
            "components": spec["components"],
        },
    }
    mcp_body = skills_from_mcp([tool], "inline", WarningLog())[0].body
    assert (
        "- city (string, required): City name\n- filter (object Filter)\n  - lang (string) [one of: en]"
        in mcp_body
    )


def test_a_json_pointer_token_of_other_digits_is_an_unresolved_ref() -> None:
    # "²".isdigit() is true and int("²") a ValueError: the load ended in a traceback
    spec = {
        "openapi": "3.0.0",
        "x-params": [{"name": "a", "in": "query", "schema": {"type": "string"}}],
        "paths": {"/a": {"get": {"summary": "s", "parameters": [{"$ref": "#/x-params/\u00b2"}]}}},
    }
    log = WarningLog()
    with pytest.warns(SkillWarning, match="unresolved"):
        body = skills_from_openapi(spec, "inline", log)[0].body
    assert "- [unresolved $ref: #/x-params/\u00b2]" in body
    assert log.messages == ["inline: unresolved $ref '#/x-params/\u00b2' (first in GET /a; left as a marker)"]


def test_schema_options_keep_their_enum_and_description() -> None:
    # openai/openai-openapi: `model: {anyOf: [{type: string}, {type: string, enum: [dall-e-2,
    # dall-e-3]}]}`; the option lines read "option 2: string" and the model ids were lost
    spec = {
        "openapi": "3.0.0",
        "paths": {
            "/images/generations": {
                "post": {
                    "operationId": "createImage",
                    "summary": "Creates an image given a prompt.",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "model": {
                                            "description": "The model to use.",
                                            "anyOf": [
                                                {"type": "string"},
                                                {"$ref": "#/components/schemas/ImageModel"},
                                            ],
                                        }
                                    },
                                }
                            }
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "ImageModel": {
                    "type": "string",
                    "description": "A known image model.",
                    "enum": ["dall-e-2", "dall-e-3"],
                }
            }
        },
    }
    body = skills_from_openapi(spec, "inline", WarningLog())[0].body.splitlines()
    assert "      - option 1: string" in body
    assert "      - option 2: ImageModel (string): A known image model. [one of: dall-e-2, dall-e-3]" in body


# --------------------------------------------------------------------------- SKILLS JSONL


def test_skills_jsonl_bad_lines_follow_on_error() -> None:
    path = DATA / "jsonl" / "skills.jsonl"
    report = LoadReport()
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(path, report=report)
    assert catalogue.kind == "skills_jsonl" and catalogue.ids == ["weather", "stocks", "nameless"]
    assert [str(w.message) for w in caught] == catalogue.warnings
    skipped, unnamed = catalogue.warnings
    assert skipped.startswith(f"skipped 2 bad lines in {path} (lines 3, 6; line 3: invalid JSON")
    assert unnamed == f"{path}: 1 skill without 'name' (line 5); the id is used"
    assert [s.where for s in report.skipped] == ["line 3", "line 6"]
    weather = catalogue.by_id("weather")
    assert (weather.description, weather.body, weather.metadata) == (
        "Forecast for a city.",
        "params: city, date",
        {"category": "travel"},
    )
    assert catalogue.by_id("nameless").name == "nameless"
    with pytest.raises(CorpusFormatError, match=r"skills\.jsonl line 3: invalid JSON"):
        load_skills_jsonl(path, on_error="raise")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_skills_jsonl_file_is_refused_as_a_whole(tmp_path: Path, encoding: str) -> None:
    """Every line of it was skipped as a bad line, counted inside its characters (three "lines" for
    two records), with a hint per line, into a catalogue of no skills: the other JSONL readers refuse
    such a file in one line naming the encoding and the command that converts it."""
    path = tmp_path / "skills.jsonl"
    path.write_text('{"_id": "a", "name": "A"}\n{"_id": "b", "name": "B"}\n', encoding)
    for on_error in ("skip", "raise"):
        with pytest.raises(CorpusFormatError, match=rf"^{re.escape(str(path))}: the file .*UTF-.*iconv -f"):
            load_skills_jsonl(path, on_error=on_error)
    with pytest.raises(CorpusFormatError, match=r"skills\.jsonl: the file .*UTF-"):
        load_catalogue(path)


@pytest.mark.skipif(not TOOLLENS.is_file(), reason="../shared/data/toollens is not available")
def test_real_toollens_catalogue() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalogue = load_catalogue(TOOLLENS.parent)
    assert catalogue.kind == "skills_jsonl" and len(catalogue) == 464 and catalogue.warnings == []
    first = catalogue.by_id("0")
    assert first.name == "Worldwide Recipes: Suggestions" and first.metadata["category"] == "Food"
    assert "required_params" in first.body


# --------------------------------------------------------------------------- detection


def test_detection_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "config.json").write_text('{"name": "x", "version": 1}')
    (tmp_path / "bad.yml").write_text("a: [1,\n")
    cases = {
        tmp_path: "no skill catalogue recognised in this folder (3 files",
        tmp_path / "notes.txt": "unknown catalogue file type '.txt'",
        tmp_path / "config.json": "not a skill catalogue: found an object with keys 'name', 'version'",
        tmp_path / "bad.yml": "invalid YAML",
        tmp_path / "missing": "no such file or folder",
    }
    for path, expected in cases.items():
        with pytest.raises(CorpusFormatError) as caught:
            load_catalogue(path)
        message = str(caught.value)
        assert expected in message and "\n" not in message, message
    with pytest.raises(CorpusFormatError, match="unknown catalogue kind 'xml'"):
        load_catalogue(tmp_path, kind="xml")


@pytest.mark.parametrize("path", [None, 3, b"skills"])
def test_detect_catalogue_of_a_value_that_is_no_path_is_one_line(path) -> None:
    """Until session 54 detect_catalogue(None) raised pathlib's TypeError (load_catalogue said what
    it needs)."""
    from ragroute.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="detect_catalogue needs a catalogue file or folder path"):
        detect_catalogue(path)


def test_forced_kind_and_folder_with_skills_jsonl() -> None:
    assert detect_catalogue(DATA / "jsonl") == "skills_jsonl"
    assert load_quietly(DATA / "jsonl").ids == ["weather", "stocks", "nameless"]
    assert load_quietly(DATA / "mcp" / "bare.json", kind="mcp").ids == ["echo", "add"]


def test_a_folder_of_mcp_tools_with_a_parameter_named_openapi_is_an_mcp_catalogue(tmp_path) -> None:
    # a nested "openapi" key made the folder an OpenAPI catalogue of no skills until session 36
    tools = {
        "tools": [
            {
                "name": "validate_spec",
                "description": "Validate an API description.",
                "inputSchema": {"type": "object", "properties": {"openapi": {"type": "string"}}},
            },
            {"name": "ping", "description": "Check the server.", "inputSchema": {"type": "object"}},
        ]
    }
    (tmp_path / "tools.json").write_text(json.dumps(tools, separators=(",", ":")))
    assert detect_catalogue(tmp_path) == "mcp"
    assert load_catalogue(tmp_path).ids == ["validate_spec", "ping"]
    # a spec is still one, pretty or minified, and a broken one is still sent to the spec loader
    (tmp_path / "api.json").write_text(json.dumps({"openapi": "3.0.0", "paths": {}}, separators=(",", ":")))
    from ragroute.skills.load_openapi import looks_like_spec

    assert looks_like_spec(tmp_path / "api.json") and not looks_like_spec(tmp_path / "tools.json")
    (tmp_path / "broken.json").write_text('{"openapi": "3.0.0", "paths": {')
    assert looks_like_spec(tmp_path / "broken.json")


def test_a_root_skill_whose_id_a_subfolder_also_has_gets_the_id_dot(tmp_path) -> None:
    # pdf/SKILL.md and pdf/pdf/SKILL.md: both read the id 'pdf', and the catalogue failed with a
    # duplicate id the user never chose (session 36)
    root = tmp_path / "pdf"
    for folder in (root, root / "pdf", root / "forms"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(
            f"---\nname: {folder.name}-skill\ndescription: About {folder.name}.\n---\nBody.\n"
        )
    with pytest.warns(
        SkillWarning, match=r"the root skill's id 'pdf' is also a subfolder's: the root skill's id is '\.'"
    ):
        catalogue = load_catalogue(root)
    assert sorted(catalogue.ids) == [".", "forms", "pdf"]

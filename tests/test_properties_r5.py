"""Property-based tests (hypothesis, deterministic), round 5: the skill catalogue loaders.

* a folder of ``SKILL.md`` files written from random front matter (quotes, colons, unicode, block
  scalars, numbers YAML reads differently, BOM, CRLF), markdown bodies and side files loads the
  name, description, body and metadata written, without a warning, with the same ids whatever the
  order the folders were made in;
* broken front matter loads the skill with a warning naming the file and the problem; the stand-in
  description is the first paragraph outside CommonMark code fences (or the headings);
* MCP ``tools/list`` files: name and description round trip (a missing description is a warning,
  not a drop), every parameter name (nested, behind ``$ref`` s, cycles) is in the body's parameter
  lines, an unresolved ``$ref`` is one warning naming the file, tool and reference;
* OpenAPI 3 / Swagger 2 specs (JSON and YAML): one skill per operation with method and path, ids
  from operationIds (METHOD /path when absent or shared), every parameter in the body, an
  unresolved ``$ref`` one warning naming the file and the reference;
* SKILLS JSONL and ``Skill`` records and documents round trip; duplicate ids fail listing the ids;
* :func:`ragroute.markdown.markdown_lines` finds the headings written outside code fences.
"""

from __future__ import annotations

import codecs
import json
import re
import warnings

import pytest
import yaml
from conftest import PROPERTY_SETTINGS
from hypothesis import assume, given
from hypothesis import strategies as st

from ragroute.markdown import markdown_lines
from ragroute.skills.load_mcp import load_mcp
from ragroute.skills.load_openapi import HTTP_METHODS, load_openapi
from ragroute.skills.load_skill_md import load_skill_md
from ragroute.skills.load_skills_jsonl import load_skills_jsonl
from ragroute.skills.records import Catalogue, DuplicateSkillError, Skill

SETTINGS = PROPERTY_SETTINGS

# characters YAML may hold in a quoted or block scalar (no control characters, no U+2028 / U+0085)
_CHARS = st.sampled_from(
    list("abcXYZ019 ")
    + ['"', "'", ":", ": ", "#", " #", "-", "\\", "{", "[", ",", "&", "*", "!", "|", ">"]
    + ["%", "@", "`", "é", "東京", "😀", "ß", "\t", "---", "...", "?"]
)
TEXT = st.lists(_CHARS, min_size=1, max_size=10).map("".join).filter(lambda t: t.strip())
_WORD = st.text(alphabet="abcdefgxyzé東", min_size=1, max_size=6)


def _load(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_skill_md(path, **kwargs)
    return catalogue, [str(w.message) for w in caught]


# --------------------------------------------------------------------------- SKILL.md front matter


def _yaml_scalar(value: str, style: str) -> str:
    """``value`` written as a YAML scalar of ``style`` (which must suit it)."""
    if style == "double":
        return json.dumps(value, ensure_ascii=False)
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    if style == "plain":
        return value
    lines = value.split("\n")
    return "|-\n" + "\n".join(f"  {line}" if line else "" for line in lines)


@st.composite
def front_value(draw):
    """``(yaml text, the value the loader should read)`` for a name or description."""
    style = draw(st.sampled_from(["double", "single", "plain", "number", "block"]))
    if style == "number":  # YAML reads these as numbers or dates: the text written is kept
        text = draw(st.sampled_from(["1.10", "0x1F", "1_000", "010", "2024-01-02", "1e3", "3.0"]))
        return text, text
    if style == "plain":
        text = draw(st.text(alphabet="abcXYZé東京 -_", min_size=1, max_size=12).filter(lambda t: t.strip()))
        text = "x" + text.strip()
        return text, text
    if style == "block":
        lines = draw(
            st.lists(
                st.one_of(TEXT.map(str.lstrip).filter(bool), st.just(""), st.sampled_from(["---", "..."])),
                min_size=1,
                max_size=4,
            )
        )
        assume(any(line.strip() for line in lines))
        value = "\n".join(lines).strip("\n")
        assume(value and value.lstrip() == value)
        return _yaml_scalar(value, "block"), value.strip()
    value = draw(TEXT)
    if style == "single":
        value = value.replace("\t", " ")
    return _yaml_scalar(value, style), value.strip()


#: a plain scalar as written -> the metadata value read (the text where YAML's number reads otherwise)
_NUMBERS = {
    "1.10": "1.10",
    "0x1F": "0x1F",
    "1_000": "1_000",
    "010": "010",
    "2024-01-02": "2024-01-02",
    "1e3": "1e3",
    "3.0": 3.0,
    "7": 7,
    "-0": "-0",
    "+12": "+12",
    "0o7": "0o7",
    "1:30": "1:30",
}

# markdown body lines: fences of both kinds, headings, text
_BODY_LINES = st.sampled_from(
    ["```", "~~~", "````", "```py", "~~~ sh", "# Title", "## Sub", "", "text", "| a | b |", "---", "> quote"]
)
BODY = st.lists(st.one_of(_BODY_LINES, TEXT), max_size=8).map("\n".join)
SIDE_NAMES = st.sampled_from(
    ["notes.md", "ref/api.txt", "scripts/run.py", "config.yaml", "Makefile", "b.rst"]
)


@st.composite
def skill_folder(draw):
    """A skill as written: front matter lines, the values to read back, body and side files."""
    name_yaml, name = draw(front_value())
    desc_yaml, desc = draw(front_value())
    extra = draw(
        st.dictionaries(
            st.sampled_from(["version", "tags", "license", "n"]),
            st.one_of(st.integers(-5, 5), st.lists(_WORD, max_size=3), _WORD.map(lambda w: "w" + w)),
            max_size=2,
        )
    )
    order = draw(st.permutations(["name", "description", *extra]))
    values = {"name": name_yaml, "description": desc_yaml}
    values.update({k: json.dumps(v, ensure_ascii=False) for k, v in extra.items()})
    if draw(st.booleans()):  # a number YAML reads differently keeps the text written
        written = draw(st.sampled_from(sorted(_NUMBERS)))
        order.insert(draw(st.integers(0, len(order))), "release")
        values["release"], extra["release"] = written, _NUMBERS[written]
    front = "\n".join(f"{key}: {values[key]}" for key in order)
    side = draw(st.dictionaries(SIDE_NAMES, TEXT, max_size=3))
    body = draw(BODY)
    for rel in draw(st.lists(SIDE_NAMES, max_size=2)):  # files the SKILL.md names come first
        lines = body.split("\n")
        lines.insert(draw(st.integers(0, len(lines))), f"See {rel}.")
        body = "\n".join(lines)
    return front, name, desc, extra, body, side


def _write(path, text: str, *, crlf: bool, bom: bool) -> None:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode())


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _expected_body(body: str, side: dict[str, str]) -> tuple[str, list[str]]:
    """The body a skill is documented to get: its markdown, then each side file under its
    ``[file: PATH]`` line, documentation first, each by path (the bodies name no path here)."""
    docs = (".md", ".txt", ".rst")
    named = [m.group(1) for m in re.finditer(r"See (\S+)\.(?:\n|$)", _lf(body))]
    order = sorted(side, key=lambda rel: (not rel.endswith(docs), rel))
    order = [rel for rel in dict.fromkeys(named) if rel in side] + [rel for rel in order if rel not in named]
    order = [rel for rel in order if _lf(side[rel]).strip()]
    parts = [f"[file: {rel}]\n{_lf(side[rel]).strip()}" for rel in order]
    body = _lf(body).strip()
    return "\n\n".join([body, *parts] if body else parts).strip(), order


FOLDERS = ["pdf", "pdf/forms", "a b", "東京", "x-1", "deep/er/one"]


@SETTINGS
@given(
    skills=st.lists(skill_folder(), min_size=1, max_size=4, unique_by=lambda s: s[1]),
    folders=st.permutations(FOLDERS),
    crlf=st.booleans(),
    bom=st.booleans(),
    reverse=st.booleans(),
)
def test_a_skill_folder_loads_what_was_written_without_a_warning(
    tmp_path_factory, skills, folders, crlf, bom, reverse
):
    folders = [f for f in folders if f not in ("pdf/forms",)][: len(skills)]  # no nested skills
    assume(len(folders) == len(skills))
    root = tmp_path_factory.mktemp("skills")
    written = list(zip(folders, skills))
    for folder, (front, _name, _desc, _extra, body, side) in reversed(written) if reverse else written:
        _write(root / folder / "SKILL.md", f"---\n{front}\n---\n{body}\n", crlf=crlf, bom=bom)
        for rel, text in side.items():
            _write(root / folder / rel, text, crlf=crlf, bom=False)
    catalogue, caught = _load(root)
    assert catalogue.warnings == [] and caught == []
    expected = []
    for folder, (_front, name, desc, extra, body, side) in sorted(written):
        full, files = _expected_body(body, side)
        metadata = {**extra, "path": f"{folder}/SKILL.md", "files": files}
        expected.append((folder, name, desc, full, metadata))
    assert [(s.id, s.name, s.description, s.body, s.metadata) for s in catalogue] == expected


@SETTINGS
@given(skills=st.lists(skill_folder(), min_size=2, max_size=4), order=st.permutations(range(4)))
def test_skill_ids_and_fields_do_not_depend_on_the_order_folders_were_made_in(
    tmp_path_factory, skills, order
):
    catalogues = []
    for sequence in (range(len(skills)), [i for i in order if i < len(skills)]):
        root = tmp_path_factory.mktemp("order")
        for i in sequence:
            front, _name, _desc, _extra, body, side = skills[i]
            _write(root / FOLDERS[i] / "SKILL.md", f"---\n{front}\n---\n{body}", crlf=False, bom=False)
            for rel, text in side.items():
                _write(root / FOLDERS[i] / rel, text, crlf=False, bom=False)
        catalogue, _caught = _load(root)
        catalogues.append([s.to_record() for s in catalogue])
    assert catalogues[0] == catalogues[1]
    # pdf/forms is a skill of its own: its files are never part of pdf's body
    ids = [r["_id"] for r in catalogues[0]]
    assert ids == sorted(ids) == sorted(FOLDERS[: len(skills)])
    if "pdf/forms" in ids:
        pdf = next(r for r in catalogues[0] if r["_id"] == "pdf")
        assert not any(f.startswith("forms/") for f in pdf["metadata"]["files"])


@SETTINGS
@given(
    keys=st.lists(st.sampled_from(["name", "description", "version"]), min_size=3, max_size=6),
    values=st.lists(front_value(), min_size=6, max_size=6),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_a_front_matter_key_written_twice_keeps_its_last_value_with_a_warning_naming_its_line(
    tmp_path_factory, keys, values, crlf, bom
):
    keys = ["name", "description", *keys]
    lines, read, repeats = [], {}, []
    for key, (text, value) in zip(keys, values * 2):
        if key in read:
            repeats.append((key, 2 + len(lines)))  # line 1 is the '---'
        lines.extend(f"{key}: {text}".split("\n"))
        read[key] = value
    root = tmp_path_factory.mktemp("twice")
    path = root / "s" / "SKILL.md"
    _write(path, "---\n" + "\n".join(lines) + "\n---\nBody.\n", crlf=crlf, bom=bom)
    catalogue, _caught = _load(root)
    (skill,) = catalogue
    assert (skill.name, skill.description) == (read["name"], read["description"])
    assert len(catalogue.warnings) == len(repeats)
    for (key, line), message in zip(repeats, catalogue.warnings):
        assert message.startswith(f"{path}: ") and f"{key!r}" in message and f"line {line}" in message


# --------------------------------------------------------------------------- broken front matter

# a code block as written: opening fence, lines that do NOT close it (CommonMark), closing fence
_FENCE_CHAR = st.sampled_from(["`", "~"])


@st.composite
def code_block(draw):
    char = draw(_FENCE_CHAR)
    width = draw(st.integers(3, 5))
    other = "~" if char == "`" else "`"
    inner = st.sampled_from(
        [
            "# comment, no heading",
            "## not a heading either",
            "code text",
            other * 3,  # the other character never closes
            other * width,
            char * 3 + "py",  # an info string: never a closing fence
            "a paragraph-looking line",
        ]
        + ([char * (width - 1)] if width > 3 else [])  # shorter: does not close
    )
    lines = draw(st.lists(inner, min_size=1, max_size=4))
    info = draw(st.sampled_from(["", "python", " sh"]))
    closing = char * (width + draw(st.integers(0, 2)))  # as long or longer: closes
    return [char * width + info, *lines, closing]


@st.composite
def markdown_doc(draw):
    """``(lines, headings, paragraphs)``: a markdown body of headings, paragraphs and code blocks,
    with the heading titles and the paragraph texts (one line each) outside code."""
    lines: list[str] = []
    headings: list[str] = []
    paragraphs: list[str] = []
    for kind in draw(st.lists(st.sampled_from(["heading", "code", "paragraph"]), max_size=6)):
        if kind == "code":
            lines.extend(draw(code_block()))
        elif kind == "heading":
            title = draw(_WORD)
            lines.append(f"{'#' * draw(st.integers(1, 6))} {title}")
            headings.append(title)
        else:
            words = draw(st.lists(_WORD, min_size=1, max_size=3))
            lines.append(" ".join(words))
            paragraphs.append(" ".join(words))
        lines.append("")
    return lines, headings, paragraphs


@SETTINGS
@given(doc=markdown_doc(), breakage=st.sampled_from(["none", "unclosed", "list", "no name"]))
def test_broken_front_matter_loads_the_skill_with_a_warning_and_the_first_paragraph(
    tmp_path_factory, doc, breakage
):
    lines, headings, paragraphs = doc
    body = "\n".join(lines)
    front = {
        "none": "",
        "unclosed": "---\n\n",  # (its lines up to a blank line would be the first paragraph)
        "list": "---\n- a\n- b\n---\n",
        "no name": "---\nversion: 2\n---\n",
    }[breakage]
    root = tmp_path_factory.mktemp("broken")
    (root / "my-skill").mkdir()
    (root / "my-skill" / "SKILL.md").write_text(front + body, encoding="utf-8")
    catalogue, caught = _load(root)
    (skill,) = catalogue
    assert skill.id == skill.name == "my-skill"
    expected = paragraphs[0] if paragraphs else "; ".join(headings)
    assert skill.description == expected
    assert caught == catalogue.warnings and catalogue.warnings
    for message in catalogue.warnings:
        assert str(root / "my-skill" / "SKILL.md") in message and "\n" not in message
    if breakage == "no name":
        assert any("'name'" in m for m in catalogue.warnings)
        assert any("'description'" in m for m in catalogue.warnings)
    else:
        assert any("front matter" in m for m in catalogue.warnings)


@SETTINGS
@given(name=TEXT.filter(lambda t: "\n" not in t), description=TEXT.filter(lambda t: "\n" not in t))
def test_invalid_yaml_front_matter_keeps_its_name_and_description_lines(tmp_path_factory, name, description):
    # the usual cause: an unquoted ': ' in the description
    name = "n" + name.strip().replace(": ", " ")
    description = f"Use it: {description.strip()}"
    assume(name[-1:] != ":" and not re.search(r"\s#", name) and not re.search(r"\s#", description))
    root = tmp_path_factory.mktemp("salvage")
    path = root / "s" / "SKILL.md"
    _write(path, f"---\nname: {name}\ndescription: {description}\n---\nBody.\n", crlf=False, bom=False)
    catalogue, _caught = _load(root)
    (skill,) = catalogue
    try:
        parsed = yaml.safe_load(f"name: {name}\ndescription: {description}\n")
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("name") == name and parsed.get("description") == description:
        assert catalogue.warnings == []
        assert (skill.name, skill.description) == (name, description)
    else:
        assert any(str(path) in m and "front matter" in m for m in catalogue.warnings)
        if name[0] not in "[{\"'|>&*!%@`" and description[0] not in "[{\"'|>&*!%@`":
            assert (skill.name, skill.description) == (name.strip(), description.strip())


# --------------------------------------------------------------------------- markdown headings


@SETTINGS
@given(doc=markdown_doc())
def test_markdown_lines_find_the_headings_outside_code_fences(doc):
    lines, headings, _paragraphs = doc
    found = [m.group(2).strip() for _, m in markdown_lines("\n".join(lines)) if m is not None]
    assert found == headings


# --------------------------------------------------------------------------- MCP tools/list

PARAM = st.lists(_CHARS, min_size=1, max_size=6).map("".join).filter(lambda t: t.strip() and "\n" not in t)


@st.composite
def json_schema(draw, names, defs, depth=0):
    """An object schema with properties named from ``names`` (appended there), nested objects,
    arrays of objects and ``$ref`` s to ``defs`` (which may be missing or refer back)."""
    props = {}
    for prop in draw(st.lists(PARAM, min_size=0 if depth else 1, max_size=3, unique=True)):
        names.append(prop)
        kind = draw(
            st.sampled_from(
                ["string", "integer", "object", "array", "ref", "enum"]
                if depth < 2
                else ["string", "integer", "ref"]
            )
        )
        if kind == "object":
            props[prop] = draw(json_schema(names, defs, depth + 1))
        elif kind == "array":
            props[prop] = {"type": "array", "items": draw(json_schema(names, defs, depth + 1))}
        elif kind == "ref":
            props[prop] = {"$ref": f"#/$defs/{draw(st.sampled_from(defs))}"}
        elif kind == "enum":
            props[prop] = {"type": "string", "enum": draw(st.lists(_WORD, min_size=1, max_size=3))}
        else:
            props[prop] = {"type": kind}
        if draw(st.booleans()):
            props[prop]["description"] = draw(TEXT)
    schema = {"type": "object", "properties": props}
    required = [p for p in props if draw(st.booleans())]
    if required:
        schema["required"] = required
    return schema


@st.composite
def mcp_tool(draw):
    """``(tool, parameter names, missing $ref targets)``."""
    names: list[str] = []
    defs = ["Node", "Leaf", "Missing"]
    schema = draw(json_schema(names, defs))
    used = json.dumps(schema)  # the references the properties make (before $defs is added)
    defined = {}
    for name in ("Node", "Leaf"):
        if draw(st.booleans()):
            defined[name] = {"type": "object", "properties": {f"{name.lower()}_value": {"type": "string"}}}
    if "Node" in defined:  # a cycle: Node -> next -> Node
        defined["Node"]["properties"]["next"] = {"$ref": "#/$defs/Node"}
    if defined:
        schema["$defs"] = defined
    tool = {"name": draw(TEXT.filter(lambda t: "\n" not in t)), "inputSchema": schema}
    description = draw(st.one_of(st.none(), TEXT, st.just("")))
    if description is not None:
        tool["description"] = description
    if draw(st.booleans()):
        tool["annotations"] = {"readOnlyHint": draw(st.booleans())}
    missing = {f"#/$defs/{d}" for d in defs if d not in defined and f"#/$defs/{d}" in used}
    reachable = [f"{d.lower()}_value" for d in defined if f"#/$defs/{d}" in used]
    reachable += ["next"] if "#/$defs/Node" in used and "Node" in defined else []
    return tool, names + reachable, missing


@SETTINGS
@given(
    tools=st.lists(mcp_tool(), min_size=1, max_size=4, unique_by=lambda t: t[0]["name"]),
    shape=st.sampled_from(["result", "jsonrpc", "list", "one"]),
    fmt=st.sampled_from([".json", ".yaml"]),
    bom=st.booleans(),
    folder=st.booleans(),
)
def test_mcp_tools_load_their_names_descriptions_and_every_parameter(
    tmp_path_factory, tools, shape, fmt, bom, folder
):
    if shape == "one":
        tools = tools[:1]
    listed = [t for t, _, _ in tools]
    data = {
        "result": {"tools": listed},
        "jsonrpc": {"jsonrpc": "2.0", "id": 1, "result": {"tools": listed}},
        "list": listed,
        "one": listed[0],
    }[shape]
    if shape == "list" and not any("inputSchema" in t or "description" in t for t in listed):
        return
    path = tmp_path_factory.mktemp("mcp") / f"tools{fmt}"
    text = (
        json.dumps(data, ensure_ascii=False) if fmt == ".json" else yaml.safe_dump(data, allow_unicode=True)
    )
    _write(path, text, crlf=False, bom=bom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_mcp(path.parent if folder else path)
    assert [str(w.message) for w in caught] == catalogue.warnings
    assert [(s.id, s.name) for s in catalogue] == [(t["name"], t["name"]) for t, _, _ in tools]
    for skill, (tool, names, missing) in zip(catalogue, tools):
        described = (tool.get("description") or "").strip()
        assert skill.description == described
        # (a message is one line, its runs of spaces made one: so is the tool name quoted in it)
        mine = [m for m in catalogue.warnings if " ".join(f"tool {tool['name']!r}".split()) in m]
        assert all(m.startswith(f"{path}: ") for m in mine)
        assert any("description" in m for m in mine) == (not described)
        # the unresolved references: one warning each, naming the reference
        for ref in missing:
            assert sum(ref in m and "unresolved" in m for m in mine) == 1
        assert sum("unresolved" in m for m in mine) == len(missing)
        params = skill.body.split("inputSchema JSON:")[0]
        assert params.startswith("Parameters:")
        for name in names:
            assert f"- {name} (" in params, name
        assert skill.metadata["inputSchema"] == tool["inputSchema"]
        assert skill.metadata.get("annotations") == tool.get("annotations")


# --------------------------------------------------------------------------- OpenAPI / Swagger

SEGMENT = st.text(alphabet="abcxyz-_é", min_size=1, max_size=5)


@st.composite
def openapi_spec(draw):
    """``(spec, expected operations, parameter names per operation, unresolved refs)``."""
    v3 = draw(st.booleans())
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    schemas = {
        "Pet": {
            "type": "object",
            "properties": {"pet_name": {"type": "string"}, "owner": {"$ref": prefix + "Owner"}},
        },
        "Owner": {
            "type": "object",
            "properties": {
                "owner_name": {"type": "string"},
                "pets": {"type": "array", "items": {"$ref": prefix + "Pet"}},
            },
        },
        "Alias": {"$ref": prefix + "Pet"},  # a chain: Alias -> Pet -> Owner -> Pet (a cycle)
    }
    paths: dict = {}
    expected = []
    params_of = {}
    unresolved = set()
    ids = draw(st.lists(st.sampled_from(["listPets", "getPet", "makePet", None]), min_size=8, max_size=8))
    for p_index, segs in enumerate(
        draw(
            st.lists(
                st.lists(SEGMENT, min_size=1, max_size=2),
                min_size=1,
                max_size=3,
                unique_by=lambda s: "/".join(s),
            )
        )
    ):
        with_param = draw(st.booleans())
        path = "/" + "/".join(segs) + ("/{item_id}" if with_param else "")
        path_params = []
        if with_param:
            path_params = [
                {
                    "name": "item_id",
                    "in": "path",
                    "required": True,
                    **({"schema": {"type": "string"}} if v3 else {"type": "string"}),
                }
            ]
        item: dict = {"parameters": path_params} if path_params else {}
        for m_index, method in enumerate(
            draw(st.lists(st.sampled_from(HTTP_METHODS), min_size=1, max_size=3, unique=True))
        ):
            op: dict = {}
            op_id = ids[(p_index * 3 + m_index) % len(ids)]
            if op_id is not None:
                op["operationId"] = op_id
            summary = draw(st.one_of(st.none(), TEXT))
            if summary is not None:
                op["summary"] = summary
            if draw(st.booleans()):
                op["description"] = draw(TEXT)
            names = [p["name"] for p in path_params]
            query = [q for q in draw(st.lists(PARAM, max_size=2, unique=True)) if q != "item_id"]
            op["parameters"] = [
                {"name": q, "in": "query", **({"schema": {"type": "integer"}} if v3 else {"type": "integer"})}
                for q in query
            ]
            names += query
            target = draw(st.sampled_from(["Pet", "Alias", "Missing", "Owner"]))
            if target == "Missing":
                unresolved.add(prefix + "Missing")
            schema_ref = {"$ref": prefix + target}
            if v3:
                op["responses"] = {
                    "200": {"description": "ok", "content": {"application/json": {"schema": schema_ref}}}
                }
            else:
                op["responses"] = {"200": {"description": "ok", "schema": schema_ref}}
            item[method] = op
            expected.append((method.upper(), path, op_id, op))
            params_of[(method.upper(), path)] = (names, target)
        paths[path] = item
    # operations in the order of paths, then of HTTP_METHODS within a path
    expected.sort(key=lambda e: (list(paths).index(e[1]), HTTP_METHODS.index(e[0].lower())))
    spec = {"openapi": "3.0.3"} if v3 else {"swagger": "2.0"}
    spec["info"] = {"title": draw(TEXT), "version": "1"}
    spec["paths"] = paths
    if v3:
        spec["components"] = {"schemas": schemas}
    else:
        spec["definitions"] = schemas
    return spec, expected, params_of, unresolved


@SETTINGS
@given(
    generated=openapi_spec(),
    fmt=st.sampled_from([".json", ".yaml", ".yml"]),
    bom=st.booleans(),
    crlf=st.booleans(),
    folder=st.booleans(),
)
def test_an_openapi_spec_loads_one_skill_per_operation(tmp_path_factory, generated, fmt, bom, crlf, folder):
    spec, expected, params_of, unresolved = generated
    path = tmp_path_factory.mktemp("api") / f"spec{fmt}"
    if fmt == ".json":
        text = json.dumps(spec, ensure_ascii=False, indent=1)
    else:
        text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    _write(path, text, crlf=crlf, bom=bom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_openapi(path.parent if folder else path)  # one spec in a folder: no id prefix
    assert [str(w.message) for w in caught] == catalogue.warnings
    assert all(m.startswith(f"{path}: ") and "\n" not in m for m in catalogue.warnings)
    shared = {i for _, _, i, _ in expected if i is not None and sum(e[2] == i for e in expected) > 1}
    want = []
    for method, route, op_id, op in expected:
        name = op_id if op_id is not None else f"{method} {route}"
        skill_id = f"{method} {route}" if op_id in shared or op_id is None else op_id
        description = (op.get("summary") or "").strip() or (op.get("description") or "").strip()
        want.append((skill_id, name, description, method, route))
    got = [(s.id, s.name, s.description, s.metadata["method"], s.metadata["path"]) for s in catalogue]
    assert got == want
    for skill, (_id, _name, description, method, route) in zip(catalogue, want):
        assert skill.body.startswith(f"{method} {route}")
        names, target = params_of[(method, route)]
        for name in names:
            assert f"- {name} (" in skill.body, name
        if target != "Missing":  # the chain is followed, the cycle Pet -> Owner -> Pet cut
            assert "pet_name" in skill.body and "owner_name" in skill.body and "(recursive: " in skill.body
        if not description:
            assert any(f"{method} {route} has no summary or description" in m for m in catalogue.warnings)
    for op_id in shared:
        assert sum(f"operationId {op_id!r}" in m for m in catalogue.warnings) == 1
    for ref in unresolved:
        assert sum(f"unresolved $ref {ref!r}" in m for m in catalogue.warnings) == 1
        assert any(f"[unresolved $ref: {ref}]" in s.body for s in catalogue)
    assert sum("unresolved" in m for m in catalogue.warnings) == len(unresolved)


@SETTINGS
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(["pets", "api/store", "東京"]),
            st.sampled_from([".json", ".yaml"]),
            st.lists(st.sampled_from(["common", "missing", "outside", "local"]), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda s: s[0],
    ),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_a_folder_of_specs_follows_references_inside_it_and_names_those_it_cannot(
    tmp_path_factory, specs, bom, crlf
):
    top = tmp_path_factory.mktemp("apis")
    root = top / "specs"
    common = {
        "Pet": {
            "type": "object",
            "properties": {"pet_name": {"type": "string"}, "owner": {"$ref": "#/Owner"}},
        },
        "Owner": {
            "type": "object",
            "properties": {"owner_name": {"type": "string"}, "pet": {"$ref": "#/Pet"}},
        },
    }
    (top / "outside.yaml").write_text(yaml.safe_dump(common), encoding="utf-8")
    (root / "schemas").mkdir(parents=True)
    (root / "schemas" / "common.yaml").write_text(yaml.safe_dump(common), encoding="utf-8")
    expected = []
    for stem, suffix, targets in specs:
        file = root / f"{stem}{suffix}"
        up = "../" * stem.count("/")
        refs = {
            "common": f"{up}schemas/common.yaml#/Pet",
            "missing": f"{up}schemas/none.yaml#/Pet",
            "outside": f"{up}../outside.yaml#/Pet",
            "local": "#/components/schemas/Local",
        }
        paths = {}
        for i, target in enumerate(targets):
            schema = {"$ref": refs[target]}
            paths[f"/r{i}"] = {
                "get": {
                    "summary": f"op {i}",
                    "responses": {
                        "200": {"description": "ok", "content": {"application/json": {"schema": schema}}}
                    },
                }
            }
            expected.append(
                (f"{stem}:GET /r{i}" if len(specs) > 1 else f"GET /r{i}", target, file, refs[target])
            )
        spec = {
            "openapi": "3.1.0",
            "info": {"title": stem},
            "paths": paths,
            "components": {
                "schemas": {
                    "Local": {"$ref": "#/components/schemas/Local2"},
                    "Local2": {"type": "object", "properties": {"local_name": {}}},
                }
            },
        }
        file.parent.mkdir(parents=True, exist_ok=True)
        text = (
            json.dumps(spec, ensure_ascii=False)
            if suffix == ".json"
            else yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
        )
        _write(file, text, crlf=crlf, bom=bom)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        catalogue = load_openapi(root)
    assert sorted(s.id for s in catalogue) == sorted(e[0] for e in expected)
    for skill_id, target, file, ref in expected:
        body = catalogue.by_id(skill_id).body
        if target == "common":
            assert "pet_name" in body and "owner_name" in body and "[unresolved" not in body
        elif target == "local":
            assert "local_name" in body and "[unresolved" not in body
        else:
            assert f"[unresolved $ref: {ref}]" in body
            mine = [m for m in catalogue.warnings if m.startswith(f"{file}: unresolved $ref {ref!r}")]
            reason = "no such file" if target == "missing" else "outside the folder"
            assert len(mine) == 1 and reason in mine[0]
    assert sum("unresolved" in m for m in catalogue.warnings) == len(
        {(e[2], e[3]) for e in expected if e[1] in ("missing", "outside")}
    )


# --------------------------------------------------------------------------- SKILLS JSONL and records

METADATA = st.dictionaries(
    st.text(max_size=5),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    max_size=3,
)
SKILL = st.builds(
    Skill,
    id=st.text(min_size=1, max_size=6),
    name=st.text(max_size=8),
    description=st.text(max_size=12),
    body=st.text(max_size=20),
    metadata=METADATA,
)


@SETTINGS
@given(skill=SKILL)
def test_a_skill_survives_its_record_and_its_document(skill):
    assert Skill.from_record(skill.to_record()) == skill
    assert Skill.from_record(json.loads(json.dumps(skill.to_record()))) == skill
    doc = skill.to_document()
    assert Skill.from_document(doc) == skill
    assert doc.title == skill.name and doc.id == skill.id


@SETTINGS
@given(
    skills=st.lists(SKILL, min_size=1, max_size=5, unique_by=lambda s: s.id),
    crlf=st.booleans(),
    bom=st.booleans(),
    blank=st.integers(0, 5),
)
def test_a_skills_jsonl_file_reads_back_its_records(tmp_path_factory, skills, crlf, bom, blank):
    skills = [s for s in skills if s.id.strip() and "\x00" not in s.id]
    assume(skills)
    lines = [json.dumps(s.to_record(), ensure_ascii=False) for s in skills]
    lines.insert(min(blank, len(lines)), "   ")
    data = ("\r\n" if crlf else "\n").join(lines).encode("utf-8", "surrogatepass")
    path = tmp_path_factory.mktemp("jsonl") / "skills.jsonl"
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + data)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        catalogue = load_skills_jsonl(path.parent)
    want = [(s.id, s.name.strip() or s.id, s.description, s.body, s.metadata) for s in skills]
    assert [(s.id, s.name, s.description, s.body, s.metadata) for s in catalogue] == want
    unnamed = [i for i, s in enumerate(skills) if not s.name.strip()]
    assert any("without 'name'" in m for m in catalogue.warnings) == bool(unnamed)


@SETTINGS
@given(ids=st.lists(st.text(alphabet="abc東", min_size=1, max_size=3), min_size=2, max_size=30))
def test_duplicate_ids_fail_listing_the_ids(ids):
    repeated = list(dict.fromkeys(i for n, i in enumerate(ids) if i in ids[:n]))
    skills = [Skill(id=i, name=i) for i in ids]
    if not repeated:
        assert Catalogue(skills).ids == ids
        return
    with pytest.raises(DuplicateSkillError) as error:
        Catalogue(skills, source="cat.jsonl")
    message = str(error.value)
    assert "\n" not in message and "cat.jsonl" in message
    assert message.startswith(f"{len(repeated)} duplicate skill id")
    for skill_id in repeated[:10]:
        assert repr(skill_id) in message
    assert (f"and {len(repeated) - 10} more" in message) == (len(repeated) > 10)


@SETTINGS
@given(names=st.lists(st.sampled_from(["search", "fetch", "東京"]), min_size=2, max_size=5))
def test_a_tool_name_written_twice_in_one_file_fails_naming_its_items(tmp_path_factory, names):
    path = tmp_path_factory.mktemp("dup") / "tools.json"
    tools = [{"name": n, "description": "d", "inputSchema": {"type": "object"}} for n in names]
    path.write_text(json.dumps({"tools": tools}, ensure_ascii=False), encoding="utf-8")
    repeated = list(dict.fromkeys(n for i, n in enumerate(names) if n in names[:i]))
    if not repeated:
        assert load_mcp(path).ids == names
        return
    with warnings.catch_warnings(record=True), pytest.raises(DuplicateSkillError) as error:
        warnings.simplefilter("always")
        load_mcp(path)
    message = str(error.value)
    assert "\n" not in message
    for name in repeated:
        items = [f"item {i}" for i, n in enumerate(names, 1) if n == name]
        assert repr(name) in message and all(item in message for item in items)


def test_an_indented_rule_in_a_block_scalar_does_not_end_the_front_matter(tmp_path):
    # until session 45 the '  ---' line closed the front matter: the description was 'Intro' and the
    # body began with the rest of it, without a warning
    path = tmp_path / "s" / "SKILL.md"
    _write(path, "---\nname: s\ndescription: |\n  Intro\n  ---\n  More\n---\n# Body\n", crlf=False, bom=False)
    catalogue, caught = _load(tmp_path)
    (skill,) = catalogue
    assert (skill.description, skill.body, caught) == ("Intro\n---\nMore", "# Body", [])

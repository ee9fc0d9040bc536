"""Folders of ``SKILL.md`` files (found recursively): one skill per folder holding a ``SKILL.md``.

A ``SKILL.md`` starts with YAML front matter between two ``---`` lines
(``name``, ``description`` and any other keys), then a markdown body. Per skill:

* ``id`` = the skill folder's path relative to the root (posix, e.g.
  ``"pdf/forms"``; the root's own name for a ``SKILL.md`` at the root);
* ``name`` / ``description`` = the front matter's ``name`` / ``description``; a value YAML reads
  as a number or date keeps the text written (``name: 1.10`` is ``"1.10"``, not ``"1.1"``), and so
  does a number in the other keys, nested ones too, where YAML's reads differently (``version: 1.10``,
  ``0x1F``, ``metadata: {version: 1.10}``); a
  key written twice keeps its last value, with a warning naming the file, key and line;
* ``body`` = the markdown body, then every text file beside it worth indexing
  (other ``.md`` / ``.txt`` files, small scripts and configs in the skill
  folder and its subfolders, except those of a nested skill), each under a
  ``[file: RELATIVE/PATH]`` line; a file is cut at :data:`MAX_FILE_CHARS`
  characters and a skill's side files at :data:`MAX_SIDE_CHARS` in all, taken
  in this order: the files the ``SKILL.md`` names by their relative path
  (``references/api.md``), in the order it first names them, then
  documentation (``.md``, ``.txt``, ...), then the rest, each by path, so a
  large skill keeps the files it points to;
  binary files (a NUL byte, or not UTF-8), links to files outside the skill
  folder, FIFOs and devices, and licence texts (``LICENSE*``,
  ``COPYING*``, ``NOTICE``, font licences ``*-OFL.txt``: legal boilerplate,
  not what the skill does) are skipped;
* ``metadata`` = the other front-matter keys, plus ``path`` (the SKILL.md,
  relative to the root), ``files`` (side files included), when some were
  left out ``files_skipped`` (``"PATH (reason)"``), and for front matter YAML
  refused ``front_matter_raw`` (its text, so nothing is lost).

Linked folders below the root are followed (each real folder once), so a
catalogue of links to skill checkouts loads. Line ends are read as ``\n``
(Windows ``\r\n`` files too). Skills with the same ``name`` in different
folders load (their ids differ) with one warning naming their files.

Broken front matter (no ``---`` block, an unclosed one, invalid YAML, not a
mapping) does not drop the skill: it is loaded with the name of its folder and
the first paragraph of its body as description (its headings where it has no
paragraph), and a warning naming the file
and the problem. When invalid YAML still has plain ``name: ...`` /
``description: ...`` lines (the usual cause is an unquoted ``:`` in the
description), or an unclosed block has them before its first blank line, those
lines are used instead. A missing ``name`` or
``description`` in valid front matter is filled the same way, with a warning.
A ``SKILL.md`` that is not UTF-8 follows the bad-record policy (``on_error``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, argument_text, lone_surrogate
from ragroute.loaders.common import (
    BadRecord,
    CorpusWarning,
    LoadReport,
    SkipLog,
    check_on_error,
    decode_utf8_file,
    links_outside,
)
from ragroute.loaders.folder import shown_path
from ragroute.markdown import fenced_lines
from ragroute.skills.records import Catalogue, Skill, WarningLog, jsonable
from ragroute.yaml_files import YamlProblem, parse_yaml

KIND = "skill_md"
SKILL_FILE = "SKILL.md"
#: Suffixes of side files worth indexing (documentation, scripts, small configs).
# fmt: off
SIDE_SUFFIXES = frozenset({
    ".md", ".markdown", ".txt", ".rst", ".py", ".sh", ".bash", ".zsh", ".ps1", ".js", ".mjs", ".cjs",
    ".ts", ".tsx", ".jsx", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".sql", ".rb", ".go",
    ".rs", ".java", ".kt", ".swift", ".c", ".h", ".cpp", ".cs", ".php", ".pl", ".lua", ".r", ".html",
    ".css", ".csv", ".xml",
})
# fmt: on
#: Side files without a suffix that are still worth indexing.
SIDE_NAMES = frozenset({"Makefile", "Dockerfile", "README"})
#: Suffixes of side files read as documentation (taken before scripts and configs).
DOC_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst"})
#: Licence texts and notices (legal boilerplate, identical across skills): never indexed.
_LICENSE_FILE = re.compile(
    r"(?i:(?:un)?licen[cs]es?(?:[-_.][a-z0-9.]+)?|copying(?:\.lesser|\.lib)?|(?:.*[-_])?ofl)"
    r"|NOTICES?|THIRD[-_]PARTY[-_]NOTICES?"
)
#: Only these suffixes make a licence-like name a licence text (``license_check.py`` is a script).
_LICENSE_SUFFIXES = frozenset({"", ".txt", ".md", ".markdown", ".rst"})
#: Folders never searched for skills or side files.
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "dist", "build"})
#: Entries of a folder left out looked at, at most, to count the ``SKILL.md`` files it holds.
MAX_SKIPPED_ENTRIES = 10_000
#: A side file larger than this many bytes is not read (too big to be "beside" a skill).
MAX_FILE_BYTES = 1_000_000
#: Folders a link in a catalogue never leads the walk into.
SYSTEM_DIRS = tuple(Path(p) for p in ("/proc", "/sys", "/dev"))
#: Characters of one side file kept in the body.
MAX_FILE_CHARS = 20_000
#: Characters of side files kept per skill in all.
MAX_SIDE_CHARS = 100_000
#: Characters of the first paragraph used as a description stand-in.
MAX_FALLBACK_DESCRIPTION = 300

UNCLOSED = "front matter is not closed (no second '---' line)"

_SALVAGE = re.compile(r"^(name|description)\s*:\s*(.*?)\s*$")


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS


def _count_skill_files(folder: str) -> tuple[int, bool]:
    """How many ``SKILL.md`` files a folder left out holds, and whether that count is exact.

    Links are not followed (neither out of the tree nor round a loop), and at most
    :data:`MAX_SKIPPED_ENTRIES` entries are looked at, so a large ``node_modules`` or ``.git`` beside
    a catalogue costs a bounded walk: past the cap the count is a lower bound (``False``)."""
    count, seen, pending = 0, 0, [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if seen >= MAX_SKIPPED_ENTRIES:
                        return count, False
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.name.lower() == SKILL_FILE.lower():
                        count += 1
        except OSError:
            continue  # an unreadable folder: what it holds cannot be counted (os.walk skips it too)
    return count, True


def skill_files(root: Path, skipped: dict[str, tuple[int, bool]] | None = None) -> list[Path]:
    """Every ``SKILL.md`` (name compared case-insensitively) under ``root``, sorted by relative path.

    Hidden folders and :data:`SKIP_DIRS` are not searched; with ``skipped``, each such folder that
    holds ``SKILL.md`` files is recorded in it (its path relative to ``root`` -> how many, and whether
    that count is exact: see :func:`_count_skill_files`), so the loader can say what it left out."""
    found: list[Path] = []
    real_root = Path(os.path.realpath(root))
    seen: set[str] = set()
    # links to folders outside the root are followed (~/.claude/skills/NAME -> a checkout of the skill),
    # each real folder once; a link to a folder inside the root is an alias of a folder walked anyway
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            path = os.path.join(folder, d)
            if _skipped_dir(d):
                if skipped is not None and not os.path.islink(path):
                    held, exact = _count_skill_files(path)
                    if held:
                        skipped[Path(path).relative_to(root).as_posix()] = (held, exact)
                continue
            if os.path.islink(path):
                real = os.path.realpath(path)
                if Path(real).is_relative_to(real_root) or real in seen:
                    continue
                if real_root.is_relative_to(real) or any(Path(real).is_relative_to(s) for s in SYSTEM_DIRS):
                    # a link to a folder holding the catalogue (`/`, `..`) would walk the whole disk,
                    # one into /proc, /sys or /dev reads what is no file
                    warnings.warn(
                        f"{path}: folder link to {real} not followed (it holds the catalogue itself, or "
                        "is a system folder)",
                        CorpusWarning,
                        stacklevel=2,
                    )
                    continue
                seen.add(real)
            kept.append(d)
        dirs[:] = kept
        found.extend(Path(folder) / f for f in files if f.lower() == SKILL_FILE.lower())
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def split_front_matter(text: str) -> tuple[str | None, str, str | None]:
    """``(front_matter, body, problem)``: the YAML between the ``---`` fences, the rest, what is wrong."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None, text, "no YAML front matter (a '---' block with name and description)"
    for i in range(1, len(lines)):
        # a closing fence starts its line, as YAML's document markers do: an indented `---` is text of
        # a block scalar (`description: |` holding a markdown rule), which ended the front matter there
        if lines[i].rstrip() in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), None
    return None, "".join(lines[1:]), UNCLOSED


def parse_front_matter(block: str, repeated: list[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """The front matter as a mapping, and the problem if it is not valid YAML or not a mapping. A key
    written twice keeps its last value, as YAML does; with ``repeated``, each repeat is noted there
    (``duplicate key 'description' at line 4``, lines of the file) for the caller to warn about."""
    try:
        # line 1 is the fence
        value = parse_yaml(block, first_line=2, yaml12_booleans=True, repeated=repeated)
    except YamlProblem as exc:
        problem = str(exc)
        if problem.startswith("invalid YAML"):
            return {}, problem.replace("invalid YAML", "invalid YAML in front matter", 1)
        return {}, f"front matter is {problem}"
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return {}, f"front matter is not a mapping (got {type(value).__name__})"
    return {str(k): v for k, v in value.items()}, None


def written_scalars(block: str) -> dict[str, Any]:
    """The text of each plain scalar of front matter as written (``name: 1.10`` -> ``"1.10"``, where
    YAML reads the float 1.1), by top-level key: a nested mapping or list gives the same for its
    entries (``metadata: {version: 1.10}`` -> ``{"version": "1.10"}``); ``{}`` when the block cannot
    be composed."""
    import yaml

    def tree(node: Any) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.style is None and node.value.strip() else None
        if isinstance(node, yaml.SequenceNode):
            return [tree(item) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            return {
                str(key.value): tree(value) for key, value in node.value if isinstance(key, yaml.ScalarNode)
            }
        return None

    try:
        node = yaml.compose(block, Loader=yaml.SafeLoader)  # noqa: S506 - a SafeLoader
        written = tree(node)
    except (yaml.YAMLError, RecursionError, ValueError):
        return {}
    return (
        {key: text for key, text in written.items() if text is not None} if isinstance(written, dict) else {}
    )


def as_written(value: Any, written: Any) -> Any:
    """A front-matter value with the text written for it where YAML made a number of it that reads
    differently (``1.10`` -> 1.1, ``0x1F`` -> 31, ``1_000`` -> 1000): the text, which loses nothing;
    in a mapping or list, each entry so (``metadata: {version: 1.10}`` gave 1.1 until session 56);
    other values as they are."""
    if isinstance(value, dict) and isinstance(written, dict):
        return {key: as_written(item, written.get(str(key))) for key, item in value.items()}
    if isinstance(value, list) and isinstance(written, list) and len(written) == len(value):
        return [as_written(item, text) for item, text in zip(value, written)]
    if not isinstance(written, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return value if str(value) == written else written


def salvage_front_matter(block: str) -> dict[str, str]:
    """Plain one-line ``name: ...`` / ``description: ...`` entries of front matter that YAML refused."""
    found: dict[str, str] = {}
    for line in block.splitlines():
        match = _SALVAGE.match(line)
        if not match or match.group(1) in found:
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif not value or value[0] in "[{\"'|>&*!%@`":
            continue  # not a plain scalar: do not guess
        found[match.group(1)] = value.strip()
    return found


def _lf(text: str) -> str:
    """``text`` with Windows (``\\r\\n``) and old Mac (``\\r``) line ends made ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def first_paragraph(body: str, limit: int = MAX_FALLBACK_DESCRIPTION) -> str:
    """The first paragraph of markdown that is not a heading or in a fenced code block, on one line
    (capped). Code blocks are those of :func:`ragroute.markdown.fenced_lines` (CommonMark): until
    session 45 any fence line toggled, so a ``~~~`` line shown in a backtick block ended it and the
    code after it was the description."""
    kept: list[str] = []
    for line, code in fenced_lines(body):
        stripped = line.strip()
        if not stripped and kept:
            break
        if code or not stripped or stripped.startswith("#") or stripped == "---":
            continue
        kept.append(stripped)
    text = " ".join(kept)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def heading_text(body: str, limit: int = MAX_FALLBACK_DESCRIPTION) -> str:
    """The body's markdown headings outside fenced code blocks (:func:`ragroute.markdown.fenced_lines`),
    ``; ``-joined on one line (capped): the description of a skill whose body has headings but no
    paragraph."""
    headings = []
    for line, code in fenced_lines(body):
        stripped = line.strip()
        if not code and re.match(r"#{1,6}\s", stripped):
            title = stripped.lstrip("#").strip().rstrip("#").strip()
            if title:
                headings.append(title)
    text = "; ".join(headings)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _scalar_text(value: Any) -> str | None:
    """A front-matter value usable as name/description (strings, numbers, dates), else ``None``."""
    if isinstance(value, str):
        return value.strip()
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return str(jsonable(value))


def _checked_bytes(path: Path, skill_dir: Path) -> tuple[bytes | None, str]:
    """``(bytes, "")`` of a regular file in ``skill_dir`` of at most :data:`MAX_FILE_BYTES`, or
    ``(None, reason)``: a link out of the folder, a FIFO or device (it would block or never end)."""
    try:
        if links_outside(path, skill_dir):
            return None, "a link to a file outside the skill folder"
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        size = info.st_size
        if size > MAX_FILE_BYTES:
            return None, f"larger than {MAX_FILE_BYTES} bytes"
        return path.read_bytes(), ""
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"


def _read_side_file(path: Path, skill_dir: Path) -> tuple[str | None, str]:
    """``(text, "")`` for a readable text file in ``skill_dir``, or ``(None, reason)``."""
    data, why = _checked_bytes(path, skill_dir)
    if data is None:
        return None, why
    if b"\x00" in data[:8192]:
        return None, "binary"
    try:
        return _lf(decode_utf8_file(data)), ""
    except BadRecord:
        return None, "binary (not UTF-8)"


def is_license_file(name: str) -> bool:
    """True for a licence text or notice (``LICENSE``, ``LICENSE.txt``, ``LICENSE-MIT``, ``COPYING``,
    ``NOTICE``, ``Lora-OFL.txt``); a script or config with such a name (``license_check.py``) is not."""
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix in SIDE_SUFFIXES and suffix not in _LICENSE_SUFFIXES:
        return False
    stem = path.stem if suffix in _LICENSE_SUFFIXES else name
    return _LICENSE_FILE.fullmatch(stem) is not None


def side_files(skill_dir: Path, skill_dirs: set[Path]) -> list[Path]:
    """Files beside a SKILL.md worth indexing, in its folder and subfolders, not in a nested skill's;
    licence texts are listed too, so that the loader can report them as skipped, not drop them unsaid."""
    found = []
    for folder, dirs, files in os.walk(skill_dir):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d) and (here / d) not in skill_dirs)
        for name in files:
            path = here / name
            if name.lower() == SKILL_FILE.lower() and here == skill_dir:
                continue
            if name.startswith("."):
                continue
            if path.suffix.lower() in SIDE_SUFFIXES or name in SIDE_NAMES or is_license_file(name):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(skill_dir).as_posix())


def first_mention(body: str, rel: str) -> int | None:
    """Where ``body`` first names the relative path ``rel`` (``references/api.md``,
    ``./scripts/fill.py``; case-insensitive), or ``None``."""
    match = re.search(rf"(?<![\w.-]){re.escape(rel)}(?![\w/-])", body, re.IGNORECASE)
    return match.start() if match else None


def side_file_order(paths: list[Path], skill_dir: Path, body: str) -> list[Path]:
    """The order side files fill the budget in: those the SKILL.md names (in the order it first
    names them), then documentation, then the rest (each by path)."""

    def key(path: Path) -> tuple[int, int, bool, str]:
        rel = path.relative_to(skill_dir).as_posix()
        at = first_mention(body, rel)
        return (at is None, at or 0, path.suffix.lower() not in DOC_SUFFIXES, rel)

    return sorted(paths, key=key)


def _side_text(
    skill_dir: Path, skill_dirs: set[Path], body: str = ""
) -> tuple[list[str], list[str], list[str]]:
    """Body parts of the side files, the files included and the files skipped (``"PATH (reason)"``)."""
    parts: list[str] = []
    included: list[str] = []
    skipped: list[str] = []
    total = 0
    for path in side_file_order(side_files(skill_dir, skill_dirs), skill_dir, body):
        rel = argument_text(path.relative_to(skill_dir).as_posix())  # UTF-8 under any locale
        if lone_surrogate(rel) is not None:  # its name in the body failed the build, naming no file
            skipped.append(f"{shown_path(path.relative_to(skill_dir))} (the file name is not valid UTF-8)")
            continue
        if is_license_file(path.name):
            skipped.append(f"{rel} (licence text)")
            continue
        if total >= MAX_SIDE_CHARS:
            skipped.append(f"{rel} (over the {MAX_SIDE_CHARS}-character limit per skill)")
            continue
        text, reason = _read_side_file(path, skill_dir)
        if text is None:
            skipped.append(f"{rel} ({reason})")
            continue
        text = text.strip()
        if not text:
            continue
        room = min(MAX_FILE_CHARS, MAX_SIDE_CHARS - total)
        if len(text) > room:
            text = text[:room].rstrip() + f"\n[... {rel} cut at {room} characters]"
        total += len(text)
        parts.append(f"[file: {rel}]\n{text}")
        included.append(rel)
    return parts, included, skipped


def skill_from_file(
    skill_md: Path,
    root: Path,
    skill_dirs: set[Path],
    log: WarningLog,
    *,
    root_name: str | None = None,
    named: bool = False,
) -> Skill:
    """The skill of one ``SKILL.md`` (:class:`BadRecord` if the file is not UTF-8)."""
    skill_dir = skill_md.parent
    # the folder's name read as UTF-8 under any locale; one that is not UTF-8 is refused, as a folder
    # corpus refuses such a file (a UnicodeEncodeError traceback at the build until session 52)
    rel_dir = argument_text(skill_dir.relative_to(root).as_posix())
    skill_id = rel_dir if rel_dir != "." else argument_text(root_name or root.resolve().name)
    problem = lone_surrogate(skill_id)
    if problem is not None:
        raise BadRecord(f"the folder name is not valid UTF-8 ({problem}); rename the folder")
    source = str(skill_md)
    # read like the files beside it: a link out of its folder (unless the file was named itself), a
    # FIFO or device (/dev/zero), a file over MAX_FILE_BYTES, a binary one are refused: a catalogue
    # from elsewhere could otherwise make this read /etc/passwd into the index, or never return
    data, why = _checked_bytes(skill_md, Path(os.path.realpath(skill_md)).parent if named else skill_dir)
    if data is None:
        raise BadRecord(f"{SKILL_FILE} not read: {why}")
    text = _lf(decode_utf8_file(data))
    block, body, problem = split_front_matter(text)
    front: dict[str, Any] = {}
    salvaged: dict[str, str] = {}
    if block is not None:
        repeated: list[str] = []
        front, problem = parse_front_matter(block, repeated)
        if problem is None:  # said silently until session 40; the OpenAPI loader warned
            for what in repeated:
                log.warn(source, f"front matter: {what}: only its last value is read")
        if problem is not None and problem.startswith("invalid YAML"):
            salvaged = salvage_front_matter(block)
    elif problem == UNCLOSED:
        # the author forgot the closing '---': the lines up to the first blank line are the front matter
        head, _blank, rest = body.partition("\n\n")
        salvaged = salvage_front_matter(head)
        if salvaged:
            block, body = head.rstrip("\n") + "\n", rest
    body = body.strip()
    folder_name = skill_dir.resolve().name if rel_dir == "." else skill_dir.name
    # numbers (and dates) YAML read from front matter keep the text written for them: `name: 1.10`
    # was the name '1.1', `description: 0x1F` the description '31' (until session 40)
    written = written_scalars(block) if block is not None and problem is None and front else {}
    front = {key: as_written(value, written.get(key)) for key, value in front.items()}
    for key in ("name", "description"):
        if (
            isinstance(written.get(key), str)
            and not isinstance(front[key], (str, bool))
            and front[key] is not None
        ):
            front[key] = written[key]
    name = _scalar_text(front.get("name")) if problem is None else salvaged.get("name")
    description = _scalar_text(front.get("description")) if problem is None else salvaged.get("description")
    # a body of headings and code alone has no paragraph: the warning said "the first paragraph is
    # used" of an empty description until session 40, and its headings describe it since session 41
    paragraph = "" if description else first_paragraph(body)
    headings = "" if description or paragraph else heading_text(body)
    if problem is not None:
        fills = []
        if name:
            fills.append("name read from its 'name:' line")
        else:
            fills.append("name from the folder")
        if description:
            fills.append("description read from its 'description:' line")
        elif paragraph:
            fills.append("description from the first paragraph")
        elif headings:
            fills.append("description from the body's headings (it has no paragraph)")
        else:
            fills.append("an empty description (the body has no paragraph)")
        log.warn(source, f"broken front matter: {problem}; loaded with {' and '.join(fills)}")
    else:
        for key, value, stand_in in (
            ("name", name, "the folder name is used"),
            (
                "description",
                description,
                "the first paragraph is used"
                if paragraph
                else "the body has no paragraph: its headings are used"
                if headings
                else "the body has no paragraph or heading either: the description is empty",
            ),
        ):
            if not value:
                what = "no" if front.get(key) in (None, "") else "an unusable (non-text)"
                log.warn(source, f"front matter has {what} {key!r}; {stand_in}")
    name = name or folder_name
    description = description or paragraph or headings
    parts, included, skipped = _side_text(skill_dir, skill_dirs, body)
    full_body = "\n\n".join([body, *parts]) if body else "\n\n".join(parts)
    metadata: dict[str, Any] = {
        k: jsonable(v) for k, v in front.items() if k not in ("name", "description") or not _scalar_text(v)
    }
    if problem is not None and block:
        metadata["front_matter_raw"] = block
    metadata["path"] = f"{rel_dir}/{skill_md.name}" if rel_dir != "." else skill_md.name
    metadata["files"] = included
    if skipped:
        metadata["files_skipped"] = skipped
    return Skill(id=skill_id, name=name, description=description, body=full_body.strip(), metadata=metadata)


def _root_id_apart(skills: list[Skill], root: Path, log: WarningLog) -> list[Skill]:
    """A ``SKILL.md`` at the root takes the root folder's name as its id, which a subfolder of the
    same name also has (``pdf/SKILL.md`` and ``pdf/pdf/SKILL.md``): the root skill's id is then
    ``.``, with a warning (until session 36 the catalogue failed with a duplicate id the user never
    chose)."""
    at_root = [i for i, s in enumerate(skills) if "/" not in str(s.metadata.get("path", "/"))]
    others = {s.id for i, s in enumerate(skills) if i not in at_root}
    for i in at_root:
        if skills[i].id in others:
            log.warn(
                root / SKILL_FILE,
                f"the root skill's id {skills[i].id!r} is also a subfolder's: the root skill's id is '.'",
            )
            skills[i] = dataclasses.replace(skills[i], id=".")
    return skills


def load_skill_md(path: str | Path, *, on_error: str = "skip", report: LoadReport | None = None) -> Catalogue:
    """Load a folder of ``SKILL.md`` skills (searched recursively), or one ``SKILL.md`` file (see module doc).

    Raises :class:`~ragroute.errors.CorpusFormatError` for a missing path, a
    folder without any ``SKILL.md``, or a file not named ``SKILL.md``.
    """
    check_on_error(on_error)
    p = Path(path)
    skipped: dict[str, tuple[int, bool]] = {}
    if p.is_file() and p.name.lower() != SKILL_FILE.lower():
        # `--kind skill_md` on tools.json built one skill of the raw JSON, named after its folder,
        # with a "no front matter" warning (until session 40)
        raise CorpusFormatError(
            f"{p}: not a {SKILL_FILE} file: a skill is read from a file named {SKILL_FILE} (give it, or "
            "a folder of skills)"
        )
    if p.is_file():
        root, files = p.parent, [p]
    elif p.is_dir():
        root, files = p, skill_files(p, skipped)
        if not files:
            left = f" (only in folders that are not searched: {', '.join(skipped)})" if skipped else ""
            raise CorpusFormatError(f"{p}: no {SKILL_FILE} file in this folder or below it{left}")
    else:
        raise CorpusFormatError(f"{p}: no such file or folder")
    # the folders of every skill below: a nested skill's files (and its SKILL.md) are its own, also
    # when one SKILL.md file is loaded (until session 38 they joined that skill's body)
    skill_dirs = {f.parent for f in (files if p.is_dir() else [p, *skill_files(root, {})])}
    log = WarningLog()
    for folder, (held, exact) in skipped.items():
        why = "a hidden folder" if Path(folder).name.startswith(".") else "a build or vendored folder"
        are = "is" if held == 1 else "are"
        held_text = (
            f"its {counted(held, f'{SKILL_FILE} file')} {are}"
            if exact
            else f"at least {counted(held, f'{SKILL_FILE} file')} in it (counted in its first "
            f"{MAX_SKIPPED_ENTRIES} entries) {are}"
        )
        log.warn(
            root / folder,
            f"folder left out ({why}, not searched for skills): {held_text} not loaded; move them (or link "
            "them under another name) to load them",
        )
    skip = SkipLog(str(root), "file", on_error, report)
    skills = []
    for skill_md in files:
        try:
            skills.append(skill_from_file(skill_md, root, skill_dirs, log, named=p.is_file()))
        except BadRecord as exc:
            skip.bad(skill_md.relative_to(root).as_posix(), str(exc))
        except OSError as exc:
            skip.bad(skill_md.relative_to(root).as_posix(), f"unreadable ({exc.strerror})")
    if skip.entries:
        log.add(skip.summary(), str(root))
    skills = _root_id_apart(skills, root, log)
    by_name: dict[str, list[Skill]] = {}
    for skill in skills:
        by_name.setdefault(skill.name, []).append(skill)
    for name, same in by_name.items():
        if len(same) > 1:
            paths = ", ".join(s.metadata["path"] for s in same)
            log.warn(
                root,
                f"skill name {name!r} is used by {len(same)} skills ({paths}); their ids (folder paths) tell "
                "them apart",
            )
    log.finish()
    return Catalogue(skills, source=p, kind=KIND, warnings=log.messages)

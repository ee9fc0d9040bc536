"""The artifact store: published builds, checksummed manifests, consistent reads during rebuilds."""

import contextlib
import hashlib
import json
import random
import signal
import threading

import pytest

from ragroute.errors import ArtifactFormatError, IndexFormatError, UnknownKindError
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.store import open_snapshot, read_artifact, write_artifact
from ragroute.store.artifact import POINTER_NAME, published_path
from ragroute.store.manifest import MANIFEST_NAME, canonical_checksum
from ragroute.types import Document


def _publish(target, tag: str, size: int = 2000):
    with write_artifact(target, "test", "pair", params={"tag": tag}) as build:
        (build.path / "a.txt").write_text(tag * size)
        (build.path / "b.txt").write_text(tag * size)
    return build.manifest


def test_a_build_is_published_with_checksums_and_version(tmp_path):
    manifest = _publish(tmp_path / "art", "x")
    snapshot = open_snapshot(tmp_path / "art")
    assert snapshot.manifest.build == manifest.build and snapshot.manifest.params == {"tag": "x"}
    assert set(snapshot.manifest.files) == {"a.txt", "b.txt"}
    assert snapshot.manifest.library_version and snapshot.manifest.format_version == 2
    assert snapshot.path == tmp_path / "art" / "builds" / manifest.build
    with pytest.raises(ArtifactFormatError, match="holds a test"):
        open_snapshot(tmp_path / "art", family="index")


def test_a_build_never_replaces_another_familys_artifact(tmp_path):
    """`build --out` pointed at a trained router (or `gate fit --out` at an index) would otherwise
    publish over it, and every config naming it would break; an artifact whose manifest cannot be
    read is still rebuilt over (rebuilding is how it is repaired)."""
    kept = _publish(tmp_path / "art", "x")
    refused = r"refusing to replace .*art: it holds a test \(pair\), not an index; remove it first"
    with (
        pytest.raises(ArtifactFormatError, match=refused),
        write_artifact(tmp_path / "art", "index", "bm25") as build,
    ):
        (build.path / "c.txt").write_text("never published")
    assert open_snapshot(tmp_path / "art").manifest.build == kept.build
    (published_path(tmp_path / "art") / MANIFEST_NAME).write_text("{broken")
    with write_artifact(tmp_path / "art", "index", "bm25") as build:
        (build.path / "c.txt").write_text("repaired")
    assert open_snapshot(tmp_path / "art").manifest.family == "index"


def test_an_artifact_a_newer_ragroute_wrote_is_not_replaced_by_another_family(tmp_path):
    """Its manifest is intact (it matches CURRENT) but in a format this ragroute does not read: until
    session 47 that skipped the family check, and `build --out` replaced a newer ragroute's gate (or
    router) with an index. One of the same family is still rebuilt over."""
    kept = _publish(tmp_path / "art", "x")
    path = published_path(tmp_path / "art") / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["format_version"] = 99
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    pointer = {"build": kept.build, "manifest_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (tmp_path / "art" / POINTER_NAME).write_text(json.dumps(pointer))
    with pytest.raises(ArtifactFormatError, match="newer than this ragroute"):
        open_snapshot(tmp_path / "art")
    refused = r"refusing to replace .*art: it holds a test \(pair\), not an index; remove it first"
    with (
        pytest.raises(ArtifactFormatError, match=refused),
        write_artifact(tmp_path / "art", "index", "bm25") as build,
    ):
        (build.path / "c.txt").write_text("never published")
    assert json.loads((tmp_path / "art" / POINTER_NAME).read_text()) == pointer
    _publish(tmp_path / "art", "y")  # its own family: rebuilt over, as before
    assert open_snapshot(tmp_path / "art").manifest.params == {"tag": "y"}


def test_old_builds_are_pruned_but_the_previous_one_is_kept(tmp_path):
    builds = [_publish(tmp_path / "art", tag).build for tag in "abcd"]
    left = sorted(p.name for p in (tmp_path / "art" / "builds").iterdir())
    assert left == builds[-2:]


def test_every_bit_flip_in_the_manifest_or_pointer_is_caught(tmp_path):
    _publish(tmp_path / "art", "x", size=10)
    for path in (published_path(tmp_path / "art") / MANIFEST_NAME, tmp_path / "art" / POINTER_NAME):
        original = path.read_bytes()
        rng = random.Random(0)
        for position in rng.sample(range(len(original)), min(200, len(original))):
            flipped = bytearray(original)
            flipped[position] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(flipped))
            with pytest.raises(ArtifactFormatError) as info:
                open_snapshot(tmp_path / "art")
            assert "\n" not in str(info.value)
        path.write_bytes(original)
    assert open_snapshot(tmp_path / "art").manifest.params == {"tag": "x"}


def test_a_self_consistent_but_edited_manifest_is_still_caught(tmp_path):
    _publish(tmp_path / "art", "x", size=10)
    path = published_path(tmp_path / "art") / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["params"]["tag"] = "y"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactFormatError, match="does not match the checksum in CURRENT"):
        open_snapshot(tmp_path / "art")


def test_an_edited_manifest_with_a_matching_pointer_fails_its_own_checksum(tmp_path):
    import hashlib

    _publish(tmp_path / "art", "x", size=10)
    path = published_path(tmp_path / "art") / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["params"]["tag"] = "y"
    path.write_text(json.dumps(data))
    pointer = json.loads((tmp_path / "art" / POINTER_NAME).read_text())
    pointer["manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "art" / POINTER_NAME).write_text(json.dumps(pointer))
    with pytest.raises(ArtifactFormatError) as info:
        open_snapshot(tmp_path / "art")
    assert str(info.value) == f"{path} is corrupt: the manifest's own checksum does not match its content"


def _forge(folder, **changes):
    """Edit the published manifest and recompute its own checksum and the pointer's, as a writer of
    another version (or another tool) could: only the field types can catch it."""
    import hashlib

    from ragroute.store.manifest import canonical_checksum

    path = published_path(folder) / MANIFEST_NAME
    data = {**json.loads(path.read_text()), **changes}
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    pointer = json.loads((folder / POINTER_NAME).read_text())
    pointer["manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / POINTER_NAME).write_text(json.dumps(pointer))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder": "all-MiniLM-L6-v2"}, "field 'encoder' is not a dict"),
        ({"files": {"a.txt": {"sha256": "0" * 64, "bytes": "20"}}}, "bad file entry 'a.txt'"),
        ({"files": {"a.txt": {"bytes": 20}}}, "bad file entry 'a.txt'"),
    ],
    ids=["encoder-string", "size-string", "no-checksum"],
)
@pytest.mark.parametrize("verify", [["--verify"], ["--no-verify"], ["--json", "--no-verify"]])
def test_inspect_of_a_manifest_with_fields_of_the_wrong_type_is_one_error_line(
    tmp_path, changes, message, verify
):
    """Until session 42 an encoder recorded as a string, or a file size as a string with
    --no-verify, were a traceback in `inspect` (the checksums of such a manifest all match)."""
    from click.testing import CliRunner

    from ragroute.cli import main

    _publish(tmp_path / "art", "x", size=10)
    _forge(tmp_path / "art", **changes)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "art"), *verify])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_readers_never_mix_two_builds_during_rebuilds(tmp_path):
    target = tmp_path / "art"
    _publish(target, "a")
    stop = threading.Event()
    seen, errors = [], []

    def rebuild():
        i = 0
        while not stop.is_set():
            _publish(target, "ab"[i % 2])
            i += 1

    def read(snapshot):
        first = snapshot.file("a.txt").read_text()
        second = snapshot.file("b.txt").read_text()
        return snapshot.manifest.params["tag"], first, second

    writer = threading.Thread(target=rebuild)
    writer.start()
    try:
        for _ in range(300):
            try:
                tag, first, second = read_artifact(target, read)
            except ArtifactFormatError as exc:  # allowed: a one-line "try again", never a mix
                errors.append(str(exc))
                continue
            seen.append(tag)
            assert first == second == tag * 2000
    finally:
        stop.set()
        writer.join()
    assert len(seen) >= 290 and set(seen) <= {"a", "b"}
    assert all("kept changing" in e for e in errors)


def test_index_rebuilt_while_queried_answers_from_one_build(tmp_path):
    space = [Document(id=f"s{i}", text=f"rocket orbit comet planet {i}") for i in range(20)]
    cooking = [Document(id=f"c{i}", text=f"bread oven yeast flour {i} rocket") for i in range(30)]
    target = tmp_path / "idx"
    save_index(build_index(space, "bm25"), target)
    expected = {
        20: [(h.doc_id, h.score) for h in build_index(space, "bm25").search("rocket", k=5)],
        30: [(h.doc_id, h.score) for h in build_index(cooking, "bm25").search("rocket", k=5)],
    }
    stop = threading.Event()

    def rebuild():
        i = 0
        while not stop.is_set():
            save_index(build_index([space, cooking][i % 2], "bm25"), target)
            i += 1

    writer = threading.Thread(target=rebuild)
    writer.start()
    answered = 0
    try:
        for _ in range(150):
            try:
                index = load_index(target)
            except IndexFormatError as exc:
                assert "kept changing" in str(exc)
                continue
            got = [(h.doc_id, h.score) for h in index.search("rocket", k=5)]
            assert got == expected[len(index)]
            answered += 1
    finally:
        stop.set()
        writer.join()
    # every answer came from one build; most reads got one (a read retries when two rebuilds
    # complete during it, which a loaded machine makes likelier, so the bound is loose)
    assert answered >= 75


def test_legacy_index_folder_still_loads_and_is_replaced_in_place(tmp_path, small_docs):
    import hashlib

    index = build_index(small_docs, "bm25", name="old")
    folder = tmp_path / "old"
    folder.mkdir()
    index.store.save(folder)
    index.write_files(folder)
    vocab = folder / "bm25_vocab.json"  # 0.1 kept the BM25 statistics in a header of this file
    header = {"format": "ragroute-bm25", "format_version": 1, **index.scorer.statistics()}
    vocab.write_text(json.dumps({**header, **json.loads(vocab.read_text())}))
    files = {
        p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in folder.iterdir()
    }
    legacy = {
        "format": "ragroute-index",
        "format_version": 1,
        "kind": "bm25",
        "name": "old",
        "documents": len(small_docs),
        "params": {"bm25": index.manifest_params()["bm25"]},
        "files": files,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(legacy))
    loaded = load_index(folder)
    assert [h.doc_id for h in loaded.search("telescope", k=3)] == [
        h.doc_id for h in index.search("telescope", k=3)
    ]
    save_index(index, folder)
    assert sorted(p.name for p in folder.iterdir()) == [".lock", POINTER_NAME, "builds"]
    assert load_index(folder).manifest.format_version == 2


def test_load_artifact_dispatches_on_the_family_and_inspect_shows_it(tmp_path, small_docs):
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.store import load_artifact

    save_index(build_index(small_docs, "bm25", name="notes"), tmp_path / "idx")
    index = load_artifact(tmp_path / "idx")
    assert index.kind == "bm25" and index.search("telescope", k=1)[0].doc_id.startswith("astro")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["family"] == "index" and payload["kind"] == "bm25" and "docs.jsonl" in payload["files"]
    _publish(tmp_path / "other", "x")
    with pytest.raises(UnknownKindError, match="unknown artifact family 'test': registered ones are index"):
        load_artifact(tmp_path / "other")


def test_a_published_build_is_readable_like_any_folder(tmp_path):
    import os
    import stat

    manifest = _publish(tmp_path / "art", "x")
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / "art" / "builds" / manifest.build).stat().st_mode)
    assert mode == 0o777 & ~mask  # mkdtemp's 0700 kept every other user out of a shared index


def test_a_file_where_an_artifact_folder_is_expected_says_so(tmp_path):
    """`gate decide gate.yaml ...` said `cannot read gate.yaml/CURRENT: Not a directory`."""
    (tmp_path / "gate.yaml").write_text("kind: trained\n")
    with pytest.raises(ArtifactFormatError, match=r"gate\.yaml is a file, not a gate folder"):
        open_snapshot(tmp_path / "gate.yaml", family="gate")
    with pytest.raises(ArtifactFormatError, match=r"is a file, not an index folder"):
        open_snapshot(tmp_path / "gate.yaml", family="index")


def test_an_artifact_whose_builds_folder_is_a_link_is_never_written_or_cleaned_through(tmp_path):
    """An artifact folder from elsewhere with `builds -> ..` and a plausible CURRENT: `inspect
    --clean` removed the folders beside it, and a rebuild over it deleted every one of them."""
    from ragroute.store.artifact import clean_artifact

    victim = tmp_path / "victim"
    for name in ("mydocs", "photos"):
        (victim / name).mkdir(parents=True)
        (victim / name / "keep.txt").write_text("mine")
    evil = victim / "zz-evil"
    evil.mkdir()
    (evil / POINTER_NAME).write_text(json.dumps({"build": "zzzz", "manifest_sha256": "0" * 64}) + "\n")
    (evil / "builds").symlink_to("..")
    with pytest.raises(ArtifactFormatError, match=r"its builds is a symbolic link \(to \.\.\)"):
        clean_artifact(evil)
    with pytest.raises(ArtifactFormatError, match="its builds is a symbolic link"):
        _publish(evil, "x")
    assert sorted(p.name for p in victim.iterdir()) == ["mydocs", "photos", "zz-evil"]
    assert (victim / "mydocs" / "keep.txt").read_text() == "mine"


def test_pruning_never_follows_a_link_inside_builds(tmp_path):
    from ragroute.store.artifact import clean_artifact

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    art = tmp_path / "art"
    _publish(art, "a")
    (art / "builds" / "00000000000000000001-1-aaaaaa").symlink_to(victim, target_is_directory=True)
    _publish(art, "b")
    _publish(art, "c")
    clean_artifact(art)
    assert (victim / "keep.txt").read_text() == "mine"
    assert open_snapshot(art).manifest.params == {"tag": "c"}


@pytest.mark.parametrize("family", ["expert", "index", "router"])
def test_a_build_folder_named_for_its_artifact_says_to_name_the_artifact_folder(tmp_path, family) -> None:
    # until session 40: "<build>/manifest.json is not a ragroute manifest" (read as a 0.1 index)
    with write_artifact(tmp_path / "it", family, "k") as pending:
        (pending.path / "x.txt").write_text("x")
    build = published_path(tmp_path / "it")
    for read in (lambda: open_snapshot(build), lambda: read_artifact(build, lambda s: s)):
        with pytest.raises(ArtifactFormatError) as raised:
            read()
        assert str(raised.value) == (
            f"{build} is a build inside the artifact folder {tmp_path / 'it'}: name the artifact folder "
            f"({tmp_path / 'it'}) instead, which publishes its current build"
        )


@contextlib.contextmanager
def _no_hang(seconds: float = 5.0):
    """Fail instead of blocking for ever (a FIFO opened for reading waits for a writer)."""

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        (MANIFEST_NAME, '{"name": "My PWA", "files": {"index.html": {}, "app.js": {}}}', "manifest"),
        (POINTER_NAME, "MANIFEST-000004\n", "pointer"),
    ],
)
def test_a_folder_whose_manifest_or_current_is_not_ragroutes_is_never_written_or_cleaned(
    tmp_path, name, content, what
):
    """Until session 41 any `manifest.json` or `CURRENT` made a folder an artifact: a web app's
    folder was built over (its manifest.json and the files it listed deleted), a LevelDB
    folder's CURRENT overwritten, and `inspect --clean` took the lock in it."""
    from ragroute.store import check_replaceable
    from ragroute.store.artifact import clean_artifact

    folder = tmp_path / "app"
    (folder / "builds").mkdir(parents=True)
    (folder / name).write_text(content)
    (folder / "index.html").write_text("<html>")
    (folder / "app.js").write_text("code")
    (folder / "builds" / ".tmp-cache").write_text("mine")
    before = _tree(folder)
    refused = (
        f"refusing to overwrite {folder}: it exists and is not a ragroute artifact "
        f"(its {name} is not a ragroute {what})"
    )
    with pytest.raises(ArtifactFormatError) as raised:
        _publish(folder, "x")
    assert str(raised.value) == refused
    with pytest.raises(ArtifactFormatError) as raised:
        check_replaceable(folder, "index")  # `rerank train` / `expert train` ask before training
    assert str(raised.value) == refused
    with pytest.raises(ArtifactFormatError) as raised:
        clean_artifact(folder)
    why = f"(its {name} is not a ragroute {what})"
    assert str(raised.value) == f"nothing to clean at {folder}: it holds no ragroute artifact {why}"
    assert _tree(folder) == before and not (folder / ".lock").exists()
    # a ragroute artifact whose CURRENT is damaged is still rebuilt over (that repairs it)
    _publish(tmp_path / "art", "a")
    (tmp_path / "art" / POINTER_NAME).write_bytes(b"\x00\xffnot a pointer")
    _publish(tmp_path / "art", "b")
    assert open_snapshot(tmp_path / "art").manifest.params == {"tag": "b"}


def test_a_0_1_manifest_listing_paths_outside_its_folder_deletes_nothing_outside(tmp_path):
    """Until session 41 rebuilding a 0.1 index folder deleted every file its manifest listed:
    `../outside.txt` deleted the file beside the folder, a listed link's way out too."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("outside.txt", "abs.txt", "via-dir.txt", "target.txt"):
        (outside / name).write_text("precious")
    old = tmp_path / "old"
    old.mkdir()
    (old / "docs.jsonl").write_text("0.1 data")
    (old / "link.txt").symlink_to(outside / "target.txt")
    (old / "sub").symlink_to(outside, target_is_directory=True)
    files = ["../outside/outside.txt", str(outside / "abs.txt"), "sub/via-dir.txt", "link.txt"]
    files += ["docs.jsonl", POINTER_NAME, "builds/x", ".lock"]
    legacy = {"format": "ragroute-index", "format_version": 1, "kind": "bm25", "documents": 1}
    (old / MANIFEST_NAME).write_text(json.dumps({**legacy, "files": {name: {} for name in files}}))
    _publish(old, "x")
    assert {p.name: p.read_text() for p in outside.iterdir()} == dict.fromkeys(
        ["outside.txt", "abs.txt", "via-dir.txt", "target.txt"], "precious"
    )
    # the 0.1 index's own files went, its links stayed; the new build is published and whole
    assert sorted(p.name for p in old.iterdir()) == [".lock", POINTER_NAME, "builds", "link.txt", "sub"]
    assert open_snapshot(old).manifest.params == {"tag": "x"}


def test_a_fifo_as_current_or_manifest_is_a_one_line_error_and_is_rebuilt_over(tmp_path):
    """Until session 41 a FIFO as `CURRENT` or as the published manifest blocked every reader
    and writer of the artifact for ever."""
    import os

    pointer, manifest = tmp_path / "a1", tmp_path / "a2"
    _publish(pointer, "x")
    built = _publish(manifest, "x").build
    (pointer / POINTER_NAME).unlink()
    os.mkfifo(pointer / POINTER_NAME)
    fifo = manifest / "builds" / built / MANIFEST_NAME
    fifo.unlink()
    os.mkfifo(fifo)
    for root, path in ((pointer, pointer / POINTER_NAME), (manifest, fifo)):
        with _no_hang(), pytest.raises(ArtifactFormatError) as raised:
            open_snapshot(root)
        assert (
            str(raised.value) == f"{path} is not a regular file (a FIFO); rebuild the artifact to replace it"
        )
        with _no_hang():
            _publish(root, "y")
            _publish(root, "z")  # prunes the build whose manifest is the FIFO
        assert open_snapshot(root).manifest.params == {"tag": "z"}
        assert read_artifact(root, lambda s: s.file("a.txt").read_text()) == "z" * 2000


def test_clean_refuses_a_folder_with_a_builds_subfolder_that_is_no_artifact(tmp_path):
    """Until session 41 `inspect DIR --clean` on a project with a `builds/` folder deleted its
    `builds/.tmp-*` and `.CURRENT.*` files and left a `.lock` in it."""
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.store.artifact import clean_artifact

    project = tmp_path / "proj"
    (project / "builds" / ".tmp-cache").mkdir(parents=True)
    (project / "builds" / ".tmp-cache" / "data").write_text("keep")
    (project / ".CURRENT.swp").write_text("x")
    for extra in ((), ("src",)):  # only what a killed first build leaves, but no lock: not ours either
        for name in extra:
            (project / name).mkdir()
        before = _tree(project)
        result = CliRunner().invoke(main, ["inspect", str(project), "--clean"])
        assert result.exit_code == 2
        assert result.output.strip() == f"error: nothing to clean at {project}: it holds no ragroute artifact"
        assert _tree(project) == before and not (project / ".lock").exists()
    # what a killed first build leaves (its lock beside it) is still cleaned
    first = tmp_path / "first"
    (first / "builds" / ".tmp-dead").mkdir(parents=True)
    (first / ".lock").write_text("123\n")
    assert clean_artifact(first).debris == ["builds/.tmp-dead"]


def test_an_out_path_that_is_a_link_to_nowhere_says_so(tmp_path):
    """Until session 41: `error: /abs/out: File exists`."""
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    with pytest.raises(ArtifactFormatError) as raised:
        _publish(out, "x")
    assert str(raised.value) == (
        f"cannot write an artifact at {out}: it is a symbolic link to {tmp_path / 'gone'}, which does "
        "not exist; create that folder or remove the link"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_out_path_that_cannot_be_created_or_written_is_refused_before_any_work(tmp_path, monkeypatch):
    """`--out notes.txt/idx` (a file among its parents), a parent that is a link to nothing, a
    read-only folder: until session 53 `building` let each through, and the build failed only when
    writing, after all its work, naming `OUT/builds: Not a directory` (or `OUT: Permission
    denied`)."""
    import os
    from pathlib import Path

    from ragroute.store import building

    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: what the system tells any other user of this folder
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and access(path, mode))
    cases = [
        (tmp_path / "notes.txt" / "idx", f"{tmp_path / 'notes.txt'} is a file, not a folder"),
        (tmp_path / "notes.txt" / "a" / "b", f"{tmp_path / 'notes.txt'} is a file, not a folder"),
        (tmp_path / "gone" / "idx", f"{tmp_path / 'gone'} is a symbolic link to nothing"),
        (read_only / "idx", f"{read_only} is a folder this user may not write in"),
    ]
    for out, why in cases:
        with pytest.raises(ArtifactFormatError) as raised, building(out, "test"):
            raise AssertionError(f"the build started for {out}")
        assert str(raised.value) == f"cannot write an artifact at {out}: {why}"
    from ragroute.store import check_writable  # what the long commands check before any work

    for out, why in cases:
        with pytest.raises(ArtifactFormatError) as raised:
            check_writable(out, "test")
        assert str(raised.value) == f"cannot write an artifact at {out}: {why}"
    try:
        with pytest.raises(ArtifactFormatError, match=f"at {read_only}: it is a folder this user may not"):
            check_writable(read_only, "test")
    finally:
        read_only.chmod(0o755)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not os.path.lexists(tmp_path / "nowhere")
    assert list(read_only.iterdir()) == []
    check_writable(tmp_path / "new" / "deeper" / "idx", "test")  # folders to be made are fine
    _publish(tmp_path / "new" / "deeper" / "idx", "x")

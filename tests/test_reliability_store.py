"""The artifact store under concurrent writers, killed writers and readers that hold a build."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from ragroute.errors import ArtifactFormatError, RagrouteError
from ragroute.store import open_snapshot, read_artifact, write_artifact
from ragroute.store.artifact import BUILDS_DIR, clean_artifact, published_path
from ragroute.store.locks import LOCK_NAME, ArtifactBusyError, writer_lock


def _publish(target, tag: str):
    with write_artifact(target, "test", "pair", params={"tag": tag}) as build:
        (build.path / "a.txt").write_text(tag * 100)
    return build.manifest.build


def _builds(target):
    return sorted(p.name for p in (target / BUILDS_DIR).iterdir())


def test_concurrent_writers_of_one_artifact_wait_for_each_other(tmp_path):
    target = tmp_path / "art"
    _publish(target, "0")
    inside = []
    errors = []

    def write(tag: str) -> None:
        try:
            with write_artifact(target, "test", "pair", params={"tag": tag}) as build:
                inside.append(("in", tag))
                time.sleep(0.2)
                (build.path / "a.txt").write_text(tag)
                inside.append(("out", tag))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # one writer at a time: each "in" is followed by its own "out"
    assert [kind for kind, _ in inside] == ["in", "out", "in", "out"]
    assert inside[0][1] == inside[1][1] and inside[2][1] == inside[3][1]
    assert open_snapshot(target).manifest.params["tag"] == inside[-1][1]
    assert len(_builds(target)) == 2  # the current and the previous build, no debris


def test_a_writer_gives_up_with_one_line_after_the_lock_timeout(tmp_path, monkeypatch):
    target = tmp_path / "art"
    _publish(target, "0")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ragroute.store.locks import writer_lock\n"
            "with writer_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)",
            str(target / LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("RAGROUTE_LOCK_TIMEOUT", "0.3")
        with pytest.raises(ArtifactBusyError) as info:
            _publish(target, "1")
        message = str(info.value)
        assert "\n" not in message and f"pid {holder.pid}" in message and "RAGROUTE_LOCK_TIMEOUT" in message
        with pytest.raises(ArtifactBusyError):
            clean_artifact(target)
        assert open_snapshot(target).manifest.params["tag"] == "0"
        assert [p for p in _builds(target) if p.startswith(".")] == []
    finally:
        holder.kill()
        holder.wait()
    _publish(target, "2")  # the lock died with its holder
    assert open_snapshot(target).manifest.params["tag"] == "2"


def test_a_killed_writers_debris_is_removed_by_the_next_write_or_clean(tmp_path):
    target = tmp_path / "art"
    first = _publish(target, "0")
    builds = target / BUILDS_DIR
    # what SIGKILLs leave: a complete index in a temporary folder, a renamed but never
    # published build, a pointer file never swapped in, a build renamed aside for deletion
    (builds / ".tmp-dead1").mkdir()
    (builds / ".tmp-dead1" / "a.txt").write_text("complete but unpublished")
    unpublished = f"{int(first.split('-')[0]) + 10:020d}-1-abcdef"
    (builds / unpublished).mkdir()
    (builds / unpublished / "manifest.json").write_text("{}")
    (target / ".CURRENT.xyz").write_text("{}")
    (builds / ".trash-old").mkdir()
    report = clean_artifact(target)
    assert sorted(report.debris) == sorted(["builds/.tmp-dead1", "builds/.trash-old", ".CURRENT.xyz"])
    assert report.builds == [unpublished]
    assert _builds(target) == [first]
    (builds / ".tmp-dead2").mkdir()
    second = _publish(target, "1")
    assert _builds(target) == [first, second]
    assert read_artifact(target, lambda s: s.file("a.txt").read_text()) == "1" * 100


def test_a_killed_first_build_does_not_block_the_next_one(tmp_path):
    target = tmp_path / "art"
    (target / BUILDS_DIR / ".tmp-dead").mkdir(parents=True)
    (target / LOCK_NAME).write_text("123\n")
    unfinished = r"holds no ragroute artifact \(CURRENT is missing; interrupted"
    with pytest.raises(ArtifactFormatError, match=unfinished):
        open_snapshot(target)
    _publish(target, "x")
    assert open_snapshot(target).manifest.params["tag"] == "x"
    assert [p for p in _builds(target) if p.startswith(".")] == []


def test_a_build_held_by_a_reader_is_not_pruned(tmp_path):
    target = tmp_path / "art"
    oldest = _publish(target, "0")
    seen = []

    def read(snapshot):
        # while this reader holds build 0, two newer builds are published
        _publish(target, "1")
        _publish(target, "2")
        assert oldest in _builds(target)
        seen.append(snapshot.file("a.txt").read_text())
        return snapshot.manifest.build

    # the reader's lock is on another open file than the writer's, so threads see each other
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(read_artifact(target, read)))
    reader.start()
    reader.join()
    assert result == [oldest] and seen == ["0" * 100]
    assert oldest in _builds(target)  # kept while held...
    _publish(target, "3")
    assert oldest not in _builds(target)  # ...and pruned by the next write
    assert len(_builds(target)) == 2


def test_writer_lock_is_reentrant_in_one_thread(tmp_path):
    target = tmp_path / "art"
    _publish(target, "0")
    with writer_lock(target / LOCK_NAME, str(target)):  # a read-modify-write holds it around the write
        _publish(target, "1")
    assert published_path(target).name == _builds(target)[-1]
    assert os.path.isfile(target / LOCK_NAME)


def test_paths_the_system_refuses_are_one_line_errors(tmp_path):
    """Found by the 10,000-case fuzz run: a routing config naming a path too long for the file
    system (or with a NUL in it) crashed `config check` and `load_routing` with OSError/ValueError."""
    import yaml

    from ragroute.index.io import load_index
    from ragroute.reliability.workload import WordHashEncoder
    from ragroute.route.config import load_routing
    from ragroute.route.config_check import check_config
    from ragroute.store import artifact_exists

    for bad in ("x" * 300, "a\0b"):
        with pytest.raises(ArtifactFormatError, match="cannot read") as info:
            load_index(tmp_path / bad)
        assert "\n" not in str(info.value)
        assert not artifact_exists(tmp_path / bad)
        for config in (
            {"sources": {"a": {"index": bad}}},
            {"sources": {"a": {"index": bad}}, "router": {"kind": "knn", "examples": bad}},
        ):
            path = tmp_path / "routing.yaml"
            path.write_text(yaml.safe_dump(config))
            assert check_config(path).problems  # listed, not raised
            with pytest.raises(RagrouteError) as info:
                load_routing(path, encoder=WordHashEncoder())
            assert "\n" not in str(info.value)


def test_a_lock_file_that_is_a_link_or_no_regular_file_is_never_written_through(tmp_path):
    """Until session 41 a `.lock` that was a symbolic link (an artifact folder from elsewhere)
    had the file it pointed to truncated and overwritten with the writer's pid, by a rebuild and
    by `inspect --clean`."""
    target = tmp_path / "art"
    _publish(target, "0")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious user data")
    lock = target / LOCK_NAME
    lock.unlink()
    lock.symlink_to(victim)
    linked = (
        f"refusing to lock {target}: its lock file {lock} is a symbolic link (to {victim}); "
        "ragroute never writes through one - remove the link"
    )
    for write in (lambda: _publish(target, "1"), lambda: clean_artifact(target)):
        with pytest.raises(RagrouteError) as raised:
            write()
        assert str(raised.value) == linked
    assert victim.read_text() == "precious user data"
    assert open_snapshot(target).manifest.params["tag"] == "0"
    lock.unlink()
    os.mkfifo(lock)
    with pytest.raises(RagrouteError) as raised:
        _publish(target, "1")
    assert (
        str(raised.value)
        == f"refusing to lock {target}: its lock file {lock} is not a regular file; remove it"
    )
    lock.unlink()
    _publish(target, "1")
    assert open_snapshot(target).manifest.params["tag"] == "1" and lock.is_file()


def test_a_clock_set_back_never_prunes_the_previous_build(tmp_path, monkeypatch):
    """Builds are ordered by their ids, which began with the clock: a clock set back gave the new
    build an id below the published one, and pruning deleted the published one (the previous
    build, kept by every write) as a killed writer's debris. Ids now always grow."""
    import ragroute.store.artifact as artifact

    target = tmp_path / "art"
    clock = iter([3_000_000_000_000_000_000, 2_000_000_000_000_000_000, 1_000_000_000_000_000_000])
    from types import SimpleNamespace

    monkeypatch.setattr(artifact, "time", SimpleNamespace(time_ns=lambda: next(clock), time=time.time))
    first = _publish(target, "0")
    second = _publish(target, "1")  # the clock went back between the two builds
    assert open_snapshot(target).manifest.params["tag"] == "1"
    assert _builds(target) == sorted([first, second])  # the previous build is kept
    third = _publish(target, "2")
    assert _builds(target) == [second, third] and second < third


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "-inf"])
def test_a_lock_timeout_that_is_not_a_finite_count_of_seconds_is_one_line(tmp_path, monkeypatch, value):
    """Until session 41 max(0.0, nan) made RAGROUTE_LOCK_TIMEOUT=nan (and -5) no wait at all."""
    monkeypatch.setenv("RAGROUTE_LOCK_TIMEOUT", value)
    with pytest.raises(RagrouteError, match=f"^RAGROUTE_LOCK_TIMEOUT='{value}' is not a number of seconds"):
        _publish(tmp_path / "art", "0")
    assert not (tmp_path / "art" / LOCK_NAME).exists()
    monkeypatch.setenv("RAGROUTE_LOCK_TIMEOUT", "0")
    _publish(tmp_path / "art", "0")  # no wait at all is a valid choice


_WRITE_ONE = (
    "import sys\nfrom ragroute.store import write_artifact\n"
    "with write_artifact(sys.argv[1], 'test', 'pair', params={'tag': 'killed'}) as build:\n"
    "    (build.path / 'a.txt').write_text('killed' * 100)\n"
)


def _write_killed_at(target, point: str) -> None:
    """Run a writer of ``target`` in a process that SIGKILLs itself at the crash point ``point``
    (numbered from a traced run of a first build: the steps up to the pointer swap are the same)."""
    trace, probe = target.parent / "trace.txt", target.parent / "probe"
    env = {**os.environ, "RAGROUTE_KILL_TRACE": str(trace)}
    subprocess.run([sys.executable, "-c", _WRITE_ONE, str(probe)], env=env, check=True, timeout=60)
    numbers = [line.split("\t") for line in trace.read_text().splitlines()]
    at = next(number for number, name in numbers if name == point)
    env = {**os.environ, "RAGROUTE_KILL_AT": at}
    done = subprocess.run([sys.executable, "-c", _WRITE_ONE, str(target)], env=env, timeout=60)
    assert done.returncode == -9


@pytest.mark.parametrize("point", ["publish: build renamed into builds/", "publish: new pointer written"])
def test_a_first_build_killed_before_its_pointer_does_not_block_the_next_one(tmp_path, point):
    """Until session 49 a first build killed once its build was renamed into builds/ (before the
    pointer named it) left a folder every later build and `inspect --clean` refused as "not a
    ragroute artifact"."""
    target = tmp_path / "art"
    _write_killed_at(target, point)
    assert len(_builds(target)) == 1
    left = _builds(target)
    assert clean_artifact(target).builds == left and _builds(target) == []  # the unpublished build went
    _write_killed_at(target, point)
    built = _publish(target, "x")
    assert open_snapshot(target).manifest.params["tag"] == "x"
    assert _builds(target) == [built] and [p for p in os.listdir(target) if p.startswith(".C")] == []


def test_a_rebuild_killed_before_its_pointer_swap_keeps_the_previous_build(tmp_path):
    """Until session 49 the never-published build a killed rebuild left sorted below the next build
    and was kept as "the previous build", and the build published before was pruned instead."""
    target = tmp_path / "art"
    first = _publish(target, "0")
    _write_killed_at(target, "publish: new pointer written")
    assert len(_builds(target)) == 2 and open_snapshot(target).manifest.params["tag"] == "0"
    second = _publish(target, "1")
    assert _builds(target) == [first, second]


def test_a_publish_that_fails_writing_its_pointer_leaves_no_build_behind(tmp_path, monkeypatch):
    """A full disk while the pointer is written: the previous build stays published and the failed
    one (renamed into builds/ already) is removed with its pointer file (until session 49 it
    stayed, and the next write pruned the previous build in its place)."""
    import errno

    import ragroute.store.artifact as artifact

    target = tmp_path / "art"
    first = _publish(target, "0")
    real = artifact.write_synced

    def full(path, text):
        if path.name.startswith(".CURRENT."):
            with open(path, "w") as handle:
                handle.write(text[:3])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(artifact, "write_synced", full)
    with pytest.raises(OSError, match="No space left"):
        _publish(target, "1")
    monkeypatch.setattr(artifact, "write_synced", real)
    assert _builds(target) == [first] and sorted(os.listdir(target)) == [LOCK_NAME, "CURRENT", BUILDS_DIR]
    assert open_snapshot(target).manifest.params["tag"] == "0"
    second = _publish(target, "2")
    assert _builds(target) == [first, second]


def test_a_note_that_is_no_regular_file_never_hangs_a_write_or_clean(tmp_path):
    """Until session 49 a FIFO named like a note of an unfinished build (`builds/.pending-*`, in a
    folder from elsewhere) hung every write and `inspect --clean` of the artifact."""
    target = tmp_path / "art"
    _publish(target, "0")
    os.mkfifo(target / BUILDS_DIR / ".pending-0123456789ab.json")
    script = (
        "import sys, warnings\nfrom ragroute.store.artifact import clean_artifact\n"
        "warnings.simplefilter('ignore')\nclean_artifact(sys.argv[1])\n" + _WRITE_ONE
    )
    try:
        subprocess.run([sys.executable, "-c", script, str(target)], check=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("a write hung on a FIFO in builds/")
    assert open_snapshot(target).manifest.params["tag"] == "killed"
    assert [p for p in _builds(target) if p.startswith(".")] == []


def _corpus(folder, word: str):
    folder.mkdir()
    (folder / "comets.md").write_text(f"# Comets\n\nComets grow an ion tail in the solar wind {word}.\n")
    (folder / "bread.md").write_text("# Bread\n\nSourdough needs a long fermentation.\n")
    (folder / "printer.md").write_text("# Printer\n\nReset the printer before replacing the toner.\n")
    return folder


@pytest.mark.parametrize("fault", ["write", "fsync-eio", "fsync-edquot"])
def test_a_write_or_fsync_the_disk_refuses_is_one_line_naming_the_artifact(tmp_path, monkeypatch, fault):
    """A full disk (or quota, or I/O error) says so at write() or fsync(), which name no file: until
    session 53 the first was "error: no space left on device (the disk is full)", with no word of
    where, and the second was ignored, the build published with files that may never have reached
    the disk. Now both are one line naming the artifact, which keeps its previous build."""
    import errno

    import scipy.sparse as sp

    from ragroute.cli.testing import invoke

    out = tmp_path / "idx"

    def build(corpus):
        return invoke(["build", str(corpus), "--out", str(out), "--method", "bm25"])

    def answer():  # the hits, not the timings
        return invoke(["query", str(out), "alpha", "--json"]).stdout.split('"trace"')[0]

    assert build(_corpus(tmp_path / "a", "alpha")).exit_code == 0
    before, published = answer(), _builds(out)
    assert '"doc_id": "comets' in before  # a word of the first build only
    if fault == "write":
        save_npz = sp.save_npz

        def full(file, *args, **kwargs):
            save_npz(file, *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write or close

        monkeypatch.setattr(sp, "save_npz", full)
    else:
        code = errno.EIO if fault == "fsync-eio" else errno.EDQUOT
        fsync = os.fsync

        def refused(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith("docs.jsonl"):  # a file of the build
                raise OSError(code, os.strerror(code))
            fsync(fd)

        monkeypatch.setattr(os, "fsync", refused)
    outcome = build(_corpus(tmp_path / "b", "beta"))
    monkeypatch.undo()
    assert outcome.one_line_error, (outcome.exit_code, outcome.stderr, outcome.traceback)
    reason = {"write": "no space left on device", "fsync-eio": "Input/output error"}
    assert f"error: {out}: {reason.get(fault, 'disk quota exceeded')}" in outcome.stderr
    assert _builds(out) == published and sorted(os.listdir(out)) == [LOCK_NAME, "CURRENT", BUILDS_DIR]
    assert answer() == before
    assert build(tmp_path / "b").exit_code == 0 and answer() != before

"""Extensions outside ragroute reach configs, the CLI and artifact loading: `ragroute.registry`
imports the modules named in $RAGROUTE_PLUGINS and the `ragroute.plugins` entry points before the
first lookup (until this test, only code that imported the extension itself could use its kinds)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ragroute import registry
from ragroute.errors import UnknownKindError
from ragroute.route.factories import ROUTER_SETTINGS

PLUGIN = textwrap.dedent(
    """
    from ragroute.gate.signals import GATE_SIGNALS, ComplexitySignal
    from ragroute.registry import FUSIONS, ROUTERS
    from ragroute.route.factories import ROUTER_SETTINGS

    class ProbeSignal(ComplexitySignal):
        kind = "probe_signal"

    ROUTERS.register("probe_router", "ragroute.route.factories:prototype")
    ROUTER_SETTINGS["probe_router"] = {"probe_bias"}
    FUSIONS.register("probe_fusion", "ragroute.index.fusion:rrf")
    GATE_SIGNALS["probe_signal"] = ProbeSignal
    """
)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process that has not loaded its plugins yet; what the plugin registers is removed after."""
    monkeypatch.setattr(registry, "_plugins_loaded", False, raising=False)
    monkeypatch.setattr(registry, "_plugin_errors", [], raising=False)
    monkeypatch.delenv("RAGROUTE_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    from ragroute.gate.signals import GATE_SIGNALS

    registry.ROUTERS.unregister("probe_router")
    registry.FUSIONS.unregister("probe_fusion")
    ROUTER_SETTINGS.pop("probe_router", None)
    GATE_SIGNALS.pop("probe_signal", None)
    for name in ("probe_plugin", "probe_plugin_ep"):
        sys.modules.pop(name, None)


def test_env_plugin_kinds_reach_lookups_errors_and_router_keys(fresh, monkeypatch):
    (fresh / "probe_plugin.py").write_text(PLUGIN)
    monkeypatch.setenv("RAGROUTE_PLUGINS", "probe_plugin")
    assert registry.ROUTERS.check("probe_router") == "probe_router"
    with pytest.raises(UnknownKindError, match="registered ones are .*probe_fusion"):
        registry.FUSIONS.check("probe_fusio")
    from ragroute.pipeline.build import check_router_settings

    assert check_router_settings({"kind": "probe_router", "probe_bias": 1}, "cfg") == "probe_router"


def test_saved_gate_signal_kind_found_in_a_fresh_process(fresh, monkeypatch):
    (fresh / "probe_plugin.py").write_text(PLUGIN)
    monkeypatch.setenv("RAGROUTE_PLUGINS", "probe_plugin")
    from ragroute.gate.signals import make_signal

    assert make_signal("probe_signal").kind == "probe_signal"  # what TrainedGate.load calls


def test_entry_point_plugin(fresh):
    (fresh / "probe_plugin_ep.py").write_text(PLUGIN)
    info = fresh / "probe_plugin_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-plugin-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ragroute.plugins]\nprobe = probe_plugin_ep\n")
    assert "probe_router" in registry.ROUTERS.names()


def test_broken_plugin_is_named_where_its_kind_is_missed(fresh, monkeypatch):
    monkeypatch.setenv("RAGROUTE_PLUGINS", "no_such_probe_plugin")
    assert "prototype" in registry.ROUTERS.names()  # listing (CLI choices) does not fail on it
    with pytest.raises(UnknownKindError, match="cannot load ragroute plugin .*no_such_probe_plugin"):
        registry.ROUTERS.check("probe_router")


def test_a_lookup_in_another_thread_waits_for_the_plugins(fresh, monkeypatch):
    """A thread looking a kind up while another thread imports the plugins waits for them (until
    session 42 it found the loading begun and was told the plugin's kind is unknown)."""
    import threading

    (fresh / "probe_sync.py").write_text(
        "import threading\nstarted = threading.Event()\ngo = threading.Event()\n"
    )
    (fresh / "probe_plugin.py").write_text(
        "import probe_sync\nprobe_sync.started.set()\nprobe_sync.go.wait(10)\n" + PLUGIN
    )
    monkeypatch.setenv("RAGROUTE_PLUGINS", "probe_plugin")
    import probe_sync

    found: dict[str, object] = {}

    def look(name: str) -> None:
        try:
            found[name] = registry.ROUTERS.check("probe_router")
        except UnknownKindError as exc:
            found[name] = exc

    first = threading.Thread(target=look, args=("first",))
    first.start()
    assert probe_sync.started.wait(10)  # the plugin is being imported
    second = threading.Thread(target=look, args=("second",))
    second.start()
    second.join(0.3)
    probe_sync.go.set()
    first.join(10)
    second.join(10)
    sys.modules.pop("probe_sync", None)
    assert found == {"first": "probe_router", "second": "probe_router"}

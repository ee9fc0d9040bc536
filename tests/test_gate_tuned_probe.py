"""The ``tuned_probe`` gate signal: MiniLM fine-tuned here as a retrieve/answer classifier."""

from __future__ import annotations

import numpy as np
import pytest
from test_gate import FLAGS, TEXTS

from ragroute.context import QueryContext, encoder_key
from ragroute.errors import RagrouteError
from ragroute.gate import TrainedGate, make_signal
from ragroute.gate import tuned_probe as tuned_probe_module
from ragroute.gate.signals import Examples, TunedProbeSignal, shared_tuned_probe_fits
from ragroute.gate.tuned_probe import ProbeTrainParams, TunedProbe, soup
from ragroute.route.folds import normalized_text

SPEC = {"kind": "tuned_probe", "epochs": 4, "learning_rate": 1e-4, "folds": 2, "final": "soup"}


@pytest.fixture(scope="module")
def gate() -> TrainedGate:
    return TrainedGate.fit(TEXTS, FLAGS, None, signals=[SPEC], columns=["tuned_probe.logit"])


def test_fitted_probe_sends_unseen_lookups_to_retrieval_and_sums_to_answers(gate):
    unseen = ["Who founded the Glimmox company in Reykjavik?", "Who founded the Drenvale company in Lima?"]
    plain = ["What is 5 plus 6?", "How many legs does a sheep have?"]
    decisions = gate.gate_many([QueryContext.of(t) for t in unseen + plain])
    assert [d.action for d in decisions] == ["retrieve", "retrieve", "answer", "answer"]
    assert all(d.signals["values"]["tuned_probe.logit"] > 0 for d in decisions[:2])
    assert all(d.signals["values"]["tuned_probe.logit"] < 0 for d in decisions[2:])


def test_probe_vectors_are_cached_on_the_context_under_the_probe_model(gate, monkeypatch):
    probe_encoder = gate.signals[0].encoders()[0]
    assert probe_encoder.model_id.startswith("tuned-probe:")
    calls = []
    original = probe_encoder.encode_queries
    monkeypatch.setattr(
        probe_encoder,
        "encode_queries",
        lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw),
    )
    context = QueryContext.of("Who founded the Glimmox company in Reykjavik?")
    first = gate.gate_many([context])[0]
    second = gate.gate_many([context])[0]
    assert calls == [[context.text]]  # encoded once by the probe, then read from the context
    assert encoder_key(probe_encoder) in context.encoders_used
    assert first.probability == second.probability


def test_round_trip_keeps_the_logits_and_stores_no_pickle(tmp_path, gate):
    gate.save(tmp_path / "g")
    loaded = TrainedGate.load(tmp_path / "g")
    texts = ["Who founded the Glimmox company in Reykjavik?", "What is 5 plus 6?"]
    assert np.allclose(loaded.probabilities(texts), gate.probabilities(texts), atol=1e-6)
    expected = {**SPEC, "batch_size": 16, "members": 1}
    assert loaded.signals[0].settings() == {k: v for k, v in expected.items() if k != "kind"}
    files = [p.name for p in (tmp_path / "g").rglob("*") if p.is_file()]
    assert any(name.endswith(".safetensors") for name in files)
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".bin", ".pt"))]


class _FakeEncoder:
    model_id, backend, dim, build = "fake-probe", "torch", 2, "fake"

    def encode_queries(self, texts, **_):
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_fit_values_are_out_of_fold(monkeypatch):
    trained_on: list[list[str]] = []

    def fake_train(texts, retrieve, params, **_):
        trained_on.append(list(texts))
        return TunedProbe(_FakeEncoder(), np.array([1.0, 0.0]), 0.0)

    monkeypatch.setattr(tuned_probe_module, "train_probe", fake_train)
    texts = [*TEXTS, TEXTS[0]]  # a duplicate text must stay in its twin's fold
    flags = np.array([*FLAGS, FLAGS[0]])
    signal = TunedProbeSignal(folds=3)  # final: refit (the default)
    values = signal.fit_values(Examples(texts, flags, None))
    assert values.shape == (len(texts), 1)
    assert len(trained_on) == 4 and trained_on[-1] == texts  # three folds, then all examples
    held = [set(texts) - set(fold) for fold in trained_on[:3]]
    assert set().union(*held) == set(texts)
    assert all(a.isdisjoint(b) for i, a in enumerate(held) for b in held[i + 1 :])
    assert np.allclose(values[:, 0], [len(t) for t in texts])  # every value from a probe that held it out
    # inside shared_tuned_probe_fits, a second gate with the same examples and settings reuses the fit
    with shared_tuned_probe_fits():
        first = TunedProbeSignal(folds=3, final="refit").fit_values(Examples(texts, flags, None))
        again = TunedProbeSignal(folds=3, final="refit").fit_values(Examples(texts, flags, None))
        other = TunedProbeSignal(folds=2, final="refit").fit_values(Examples(texts, flags, None))
        assert np.array_equal(first, again) and len(trained_on) == 4 + 4 + 2  # the refit is shared
        assert other.shape == first.shape
        TunedProbeSignal(folds=3, members=2).fit_values(Examples(texts, flags, None))
        assert len(trained_on) == 10 + 4  # member 0 is the one-model probe: only member 1 is new


def test_members_average_out_of_fold_logits_of_probes_with_their_own_seeds(monkeypatch, tmp_path):
    seeds: list[int] = []

    def fake_train(texts, retrieve, params, **_):
        seeds.append(params.seed)  # member m's probe reads feature m: its logits tell members apart
        return TunedProbe(_FakeEncoder(), np.eye(2)[params.seed % 2] * (params.seed + 1), 0.0)

    monkeypatch.setattr(tuned_probe_module, "train_probe", fake_train)
    signal = TunedProbeSignal(folds=2, members=2)
    values = signal.fit_values(Examples(TEXTS, FLAGS, None))
    assert seeds == [0, 1, 0, 1, 0, 1]  # two folds and the refit, each fine-tuned by both members
    assert np.allclose(values[:, 0], [(len(t) + 2.0) / 2 for t in TEXTS])
    contexts = [QueryContext.of("abc")]
    assert len(signal.encoders()) == 2
    assert signal.values(contexts, None)[0, 0] == pytest.approx((3 + 2.0) / 2)
    data, arrays = signal.state()
    assert {k: v for k, v in data.items() if k != "own_examples"} == {
        "builds": ["fake", "fake"],
        "biases": [0.0, 0.0],
    }
    # its own examples read their out-of-fold logits (the values returned above), saved with it
    own = dict(zip(data["own_examples"]["texts"], data["own_examples"]["values"]))
    assert own == pytest.approx({normalized_text(t): v for t, v in zip(TEXTS, values[:, 0].tolist())})
    assert signal.values([QueryContext.of(TEXTS[1].upper())], None)[0, 0] == pytest.approx(values[1, 0])
    assert arrays["weight"].shape == (2, 2)
    soup_signal = TunedProbeSignal(folds=2, members=2, final="soup")
    monkeypatch.setattr(tuned_probe_module, "soup", lambda probes: probes[0])
    seeds.clear()
    soup_signal.fit_values(Examples(TEXTS, FLAGS, None))
    assert seeds == [0, 1, 0, 1] and len(soup_signal.encoders()) == 1  # no refit: one souped model


def test_an_ensemble_round_trips_and_old_one_model_files_still_load(tmp_path, gate):
    (probe,) = gate.signals[0]._probes
    ensemble = TunedProbeSignal(members=2)
    ensemble._probes = [probe, TunedProbe(probe.encoder, probe.weight * 2, probe.bias - 1.0)]
    ensemble.save(tmp_path / "ens")
    assert (tmp_path / "ens" / "model-1").is_dir()
    loaded = TunedProbeSignal(members=2)
    loaded.load(tmp_path / "ens")
    contexts = [QueryContext.of("Who founded the Glimmox company in Reykjavik?")]
    assert np.allclose(loaded.values(contexts, None), ensemble.values(contexts, None), atol=1e-5)
    # a one-model probe in the earlier layout ("build", "bias", a 1-D weight) loads as one member
    import json

    gate.signals[0].save(tmp_path / "old")
    (tmp_path / "old" / "state.json").write_text(
        json.dumps({"build": probe.encoder.build, "bias": probe.bias})
    )
    np.savez(tmp_path / "old" / "arrays.npz", weight=probe.weight)
    old = TunedProbeSignal()
    old.load(tmp_path / "old")
    assert np.allclose(old.values(contexts, None), gate.signals[0].values(contexts, None), atol=1e-5)
    with pytest.raises(RagrouteError, match="2 models, 2 biases and 1 heads"):
        np.savez(tmp_path / "ens" / "arrays.npz", weight=probe.weight)
        TunedProbeSignal(members=2).load(tmp_path / "ens")


def test_the_deciding_probe_is_the_soup_of_the_fold_models(gate):
    (probe,) = gate.signals[0]._probes  # final: soup, the fold models' weights averaged
    texts = ["Who founded the Glimmox company in Reykjavik?", "What is 5 plus 6?"]
    vectors = probe.encoder.encode_queries(texts)
    same = soup([probe, probe])  # the mean of identical models is that model
    assert np.allclose(same.logits(same.encoder.encode_queries(texts)), probe.logits(vectors), atol=1e-5)
    assert same.encoder.model is not probe.encoder.model  # a new model: the folds' are left as they are
    shifted = TunedProbe(probe.encoder, probe.weight + 2.0, probe.bias + 1.0)
    mixed = soup([probe, shifted])
    assert np.allclose(mixed.weight, probe.weight + 1.0) and mixed.bias == pytest.approx(probe.bias + 0.5)


def test_bad_settings_and_mismatched_files_fail_with_one_line(tmp_path, gate):
    with pytest.raises(RagrouteError, match="epoch"):
        make_signal({"kind": "tuned_probe", "epoch": 2})
    with pytest.raises(RagrouteError, match="soup or refit"):
        make_signal({"kind": "tuned_probe", "final": "last"})
    with pytest.raises(RagrouteError, match="members"):
        make_signal({"kind": "tuned_probe", "members": 0})
    with pytest.raises(RagrouteError, match="learning_rate"):
        ProbeTrainParams(learning_rate=0.0)
    with pytest.raises(RagrouteError, match="not fitted"):
        TunedProbeSignal().save(tmp_path / "unfitted")
    with pytest.raises(RagrouteError, match="retrieval and queries that do not"):
        tuned_probe_module.train_probe(["a", "b"], [True, True])
    gate.save(tmp_path / "g")  # a changed file inside a saved gate fails its checksum
    arrays = next((tmp_path / "g").rglob("arrays.npz"))
    np.savez(arrays, weight=np.zeros(7))
    with pytest.raises(RagrouteError, match="corrupt"):
        TrainedGate.load(tmp_path / "g")
    gate.signals[0].save(tmp_path / "signal")  # a head that does not fit the model
    np.savez(tmp_path / "signal" / "arrays.npz", weight=np.zeros(7))
    with pytest.raises(RagrouteError, match="head of width 7"):
        TunedProbeSignal().load(tmp_path / "signal")


def test_a_device_torch_cannot_use_is_one_line_before_any_fine_tune(gate):
    # the device is where the fine-tunes run, not what the signal is: it stays out of the settings a
    # saved gate is matched against, and the fitted probe decides on the CPU
    signal = make_signal({**SPEC, "device": "nosuchdevice"})
    assert signal.params.device == "nosuchdevice" and "device" not in signal.settings()
    error = r"^cannot train on device 'nosuchdevice' here \(.*\); set the tuned_probe signal's device: cpu$"
    with pytest.raises(RagrouteError, match=error):
        TrainedGate.fit(TEXTS, FLAGS, None, signals=[{**SPEC, "device": "nosuchdevice"}])
    assert str(gate.signals[0].encoders()[0].model.device) == "cpu"


@pytest.mark.parametrize(
    "state, arrays, message",
    [
        (b"{not json", {"weight": np.zeros((1, 4))}, "state.json is not readable JSON"),
        (b'{"builds": ["b"]}', {"weight": np.zeros((1, 4))}, "state.json names no model builds and biases"),
        (b'{"builds": ["b"], "biases": [NaN]}', {"weight": np.zeros((1, 4))}, "names no model builds"),
        (
            b'{"builds": ["b"], "biases": [0.0]}',
            {"heads": np.zeros((1, 4))},
            "arrays.npz has no array 'weight'",
        ),
        (b'{"builds": ["b"], "biases": [0.0]}', None, "arrays.npz is not a readable .npz file"),
    ],
)
def test_a_tuned_probes_state_that_is_wrong_is_one_line_before_any_model_loads(
    tmp_path, state, arrays, message
):
    # a KeyError or JSONDecodeError traceback until session 49 (no fine-tune needed to see it)
    folder = tmp_path / "signal"
    folder.mkdir()
    (folder / "state.json").write_bytes(state)
    if arrays is not None:
        np.savez(folder / "arrays.npz", **arrays)
    with pytest.raises(RagrouteError, match=message) as info:
        TunedProbeSignal().load(folder)
    assert "\n" not in str(info.value) and f"gate signal tuned_probe in {folder}" in str(info.value)

"""Benchmark plots (``--plot``): each draws the JSON result its benchmark prints, into a real image."""

from __future__ import annotations

import os

import pytest

from ragroute.errors import RagrouteError

pytest.importorskip("matplotlib")

from ragroute.evaluation import plots  # noqa: E402

ROUTING = {
    "collections": {"adi": {"documents": 82, "queries": 10}, "med": {"documents": 1033, "queries": 5}},
    "routers": {
        "prototype": {"accuracy": 0.8, "ndcg@10": 0.4, "errors": {"adi->med": 3}},
        "centroid (baseline)": {"accuracy": 0.6, "ndcg@10": 0.3, "errors": {"adi->med": 4, "med->adi": 2}},
    },
}
GATE = {
    "data": "metatool",
    "gates": {
        "trained": {
            "auroc": 0.95,
            "curve": [
                {"retrieval_rate": 0.3, "recall_needed": 0.6},
                {"retrieval_rate": 0.6, "recall_needed": 0.95},
            ],
        },
        "knn": {"auroc": 0.9, "curve": [{"retrieval_rate": 0.5, "recall_needed": 0.8}]},
    },
}
EXPERTS = {
    "experts_per_collection": {"base": {"adi": 0.3, "med": 0.5}, "bm25": {"adi": 0.35, "med": 0.45}},
    # as bench experts writes it: nDCG@10 under routers, the detail under router_detail
    "routers": {"pilot": 0.44},
    "router_detail": {"pilot": {"ndcg@10": 0.44, "per_collection": {"adi": 0.36, "med": 0.52}}},
}
EXPOSURE = {
    "documents": 1000,
    "goals": {"leaked_fraction": 0.05, "benign_stopped_rate": 0.01},
    "undefended": {"curve": [10, 20, 30, 40]},
    "settings": {"pipeline 2% / 200": {"attack": {"curve": [10, 20, 20, 20]}}},
}
SCORES = {
    "method": "dense",
    "scores": {
        "similarity": {"recall": {"glasgow_choose": {"0.8": 0.8}, "tatqa": {"0.8": 0.9}}},
        "rrf": {"recall": {"glasgow_choose": {"0.8": 0.8}, "tatqa": {"0.8": 0.4}}},
    },
}

SCALE = {
    "latency_ms_p50": {"flat": {"1000": 0.2, "10000": 2.0}, "ivfpq+refine@64": {"1000": 0.5, "10000": 0.6}},
    "recall@10": {"flat": {"1000": 1.0, "10000": 1.0}, "ivfpq+refine@64": {"1000": 0.97, "10000": 0.96}},
}


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("corpus-routing", ROUTING),
        ("gate", GATE),
        ("experts", EXPERTS),
        ("exposure", EXPOSURE),
        ("scores", SCORES),
        ("scale", SCALE),
    ],
)
def test_every_benchmark_plot_writes_an_image(tmp_path, name, result):
    path = plots.PLOTS[name](result, tmp_path / f"{name}.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def drawn_shares(monkeypatch) -> dict:
    """What the confusion plot hands to imshow, under ``"shares"`` once it draws."""
    import matplotlib.axes

    seen: dict = {}
    original = matplotlib.axes.Axes.imshow

    def spy(self, data, *args, **kwargs):
        seen["shares"] = data
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    return seen


def test_confusion_counts_follow_the_errors(tmp_path, monkeypatch):
    seen = drawn_shares(monkeypatch)
    plots.routing_confusion(ROUTING, tmp_path / "c.png", router="centroid (baseline)")
    # rows adi (10 queries: 4 to med), med (5: 2 to adi); columns adi, med
    assert seen["shares"] == [[0.6, 0.4], [0.4, 0.6]]
    plots.routing_confusion(ROUTING, tmp_path / "best.png")  # default: the best nDCG (prototype)
    assert seen["shares"] == [[0.7, 0.3], [0.0, 1.0]]


def test_correct_routes_sit_on_the_diagonal_whatever_order_the_collections_come_in(tmp_path, monkeypatch):
    """Rows keep the result's collection order; until session 44 the columns were sorted, so with
    collections listed other than alphabetically (med before adi) the correct routes sat off the
    diagonal. Columns now follow the rows, then any other route chosen."""
    result = {
        "collections": {"med": {"queries": 5}, "adi": {"queries": 10}},
        "routers": {"r": {"accuracy": 0.6, "ndcg@10": 0.3, "errors": {"adi->med": 4, "med->none": 1}}},
    }
    seen = drawn_shares(monkeypatch)
    plots.routing_confusion(result, tmp_path / "c.png")
    assert [seen["shares"][i][i] for i in range(2)] == [0.8, 0.6]  # the diagonal: share right
    rows, columns, counts = plots.confusion_counts(result, "r")
    assert rows == ["med", "adi"] and columns == ["med", "adi", "none"]
    assert counts == [[4, 0, 1], [4, 6, 0]]  # med: 4 right, 1 to none; adi: 6 right, 4 to med


def test_expert_bars_draw_every_expert_and_router(tmp_path, monkeypatch):
    drawn = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.bar

    def spy(self, xs, heights, *args, **kwargs):
        drawn[kwargs.get("label")] = list(heights)
        return original(self, xs, heights, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    plots.expert_bars(EXPERTS, tmp_path / "bars.png")
    # collections in name order (adi, med); the router's bars come from router_detail
    assert drawn == {"base": [0.3, 0.5], "bm25": [0.35, 0.45], "pilot": [0.36, 0.52]}


def test_plot_file_type_is_checked(tmp_path):
    with pytest.raises(RagrouteError, match="give a .png, .svg or .pdf file"):
        plots.gate_curves(GATE, tmp_path / "curve.txt")


def test_every_benchmark_with_a_plot_takes_the_option():
    from ragroute.registry import BENCHMARKS

    for name in plots.PLOTS:
        assert any("--plot" in p.opts for p in BENCHMARKS.get(name).params), name


def test_a_plot_that_cannot_be_written_is_refused_before_the_benchmark_runs(tmp_path, monkeypatch):
    """A missing folder, one that cannot be written, or no matplotlib were found only when the plot
    was drawn, after the whole run, and the --json line was never printed (until session 37)."""
    import importlib.util

    from click.testing import CliRunner

    from ragroute.cli import main

    def bench(plot):
        # bm25 sources fail later on a missing --data: the plot is checked first, as an option
        args = ["bench", "corpus-routing", "--data", str(tmp_path / "absent"), "--plot", plot]
        return CliRunner().invoke(main, args)

    missing = bench(str(tmp_path / "no" / "p.png"))
    assert missing.exit_code == 2 and f"no folder {tmp_path / 'no'} to write it in" in missing.output
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
        assert "cannot be written" in bench(str(locked / "p.png")).output
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    assert "drawing needs matplotlib" in bench(str(tmp_path / "p.png")).output
    monkeypatch.undo()
    assert "data missing" in bench(str(tmp_path / "p.png")).output  # a good path: on to the data


@pytest.fixture
def plot_labels(monkeypatch) -> list:
    """The ``label`` of every line drawn while the test runs, in order."""
    import matplotlib.axes

    labels: list = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    return labels


def test_latency_legend_says_at_which_size_each_recall_was_measured(tmp_path, plot_labels):
    """Layouts stop at different sizes (--hnsw-max): until session 44 the legend read 'hnsw (recall@10
    0.979)' beside 'flat (recall@10 1.0)', the one at 100k vectors, the other at 3M, unsaid."""
    result = {
        "latency_ms_p50": {"flat": {"1000": 0.2, "100000": 9.0}, "hnsw": {"1000": 0.3}},
        "recall@10": {"flat": {"1000": 1.0, "100000": 1.0}, "hnsw": {"1000": 0.99}},
    }
    plots.latency_vs_size(result, tmp_path / "scale.png")
    assert plot_labels == ["flat (recall@10 1.0 at 100,000)", "hnsw (recall@10 0.99 at 1,000)"]


def test_a_drawing_that_fails_half_way_keeps_the_previous_image(tmp_path, monkeypatch):
    """Until session 44 the image was drawn straight into the target: a drawing that failed or was
    interrupted half-way left a truncated file in place of the previous plot."""
    import matplotlib.figure

    target = tmp_path / "gate.png"
    plots.gate_curves(GATE, target)
    before = target.read_bytes()

    def half_written(self, fname, *args, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG\r\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written)
    with pytest.raises(KeyboardInterrupt):
        plots.gate_curves(GATE, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.png"]  # no part file left


def test_gate_curves_draw_a_json_result_whose_auroc_is_null(tmp_path, plot_labels):
    """A gate's AUROC is NaN with one class in the test split, which the --json line writes as null:
    drawing that result (what a notebook does) failed with a TypeError on formatting None."""
    import json

    result = json.loads(json.dumps(GATE))
    result["gates"]["knn"]["auroc"] = None
    plots.gate_curves(result, tmp_path / "gate.png")
    assert plot_labels[:2] == ["trained (AUROC 0.950)", "knn (AUROC n/a)"]


@pytest.fixture
def drawn_on_axes(monkeypatch) -> dict:
    """What the plots hand to the axes while the test runs: ``bars`` (label -> heights), ``texts``,
    ``xticks`` (the last tick labels), ``hlines`` ((y, label) of each horizontal line) and
    ``lines`` (the Line2D objects drawn)."""
    import matplotlib.axes

    seen: dict = {"bars": {}, "texts": [], "xticks": [], "hlines": [], "lines": []}
    originals = {
        name: getattr(matplotlib.axes.Axes, name) for name in ("bar", "text", "set_xticks", "axhline", "plot")
    }

    def bar(self, xs, heights, *args, **kwargs):
        seen["bars"][kwargs.get("label")] = list(heights)
        return originals["bar"](self, xs, heights, *args, **kwargs)

    def text(self, x, y, s, *args, **kwargs):
        seen["texts"].append(s)
        return originals["text"](self, x, y, s, *args, **kwargs)

    def set_xticks(self, ticks, labels=None, *args, **kwargs):
        seen["xticks"] = list(labels or [])
        return originals["set_xticks"](self, ticks, labels, *args, **kwargs)

    def axhline(self, y=0, *args, **kwargs):
        seen["hlines"].append((y, kwargs.get("label")))
        return originals["axhline"](self, y, *args, **kwargs)

    def plot(self, *args, **kwargs):
        lines = originals["plot"](self, *args, **kwargs)
        seen["lines"].extend(lines)
        return lines

    for name, spy in (
        ("bar", bar),
        ("text", text),
        ("set_xticks", set_xticks),
        ("axhline", axhline),
        ("plot", plot),
    ):
        monkeypatch.setattr(matplotlib.axes.Axes, name, spy)
    return seen


def test_bars_leave_a_missing_value_out_instead_of_drawing_zero(tmp_path, drawn_on_axes):
    """Until session 55 a collection a series lacked was drawn as a bar of 0: now no bar, marked n/a."""
    import math

    result = {"experts_per_collection": {"base": {"adi": 0.3, "med": 0.5}, "bm25": {"adi": 0.35}}}
    plots.expert_bars(result, tmp_path / "bars.png")
    assert drawn_on_axes["bars"]["base"] == [0.3, 0.5]
    adi, med = drawn_on_axes["bars"]["bm25"]
    assert adi == 0.35 and math.isnan(med)
    assert drawn_on_axes["texts"] == ["n/a"]


def test_score_recall_draws_a_null_recall_as_missing(tmp_path, drawn_on_axes):
    """A query set with no relevant hit has recall null in the --json line (``recall_at``): until
    session 55 drawing it was a TypeError (after the benchmark ran, a traceback), and a set only a
    later score meaning had was left off the plot."""
    import json
    import math

    result = json.loads(json.dumps(SCORES))
    result["scores"]["similarity"]["recall"]["tatqa"]["0.8"] = None
    result["scores"]["rrf"]["recall"]["glasgow_other"] = {"0.8": 0.7}
    plots.score_recall(result, tmp_path / "scores.png")
    assert drawn_on_axes["xticks"] == ["glasgow_choose", "tatqa", "glasgow_other"]
    choose, tatqa, other = drawn_on_axes["bars"]["similarity"]
    assert choose == 0.8 and math.isnan(tatqa) and math.isnan(other)
    assert drawn_on_axes["bars"]["rrf"] == [0.8, 0.4, 0.7]
    assert drawn_on_axes["texts"] == ["n/a", "n/a"]


def test_exposure_goal_line_is_labelled_with_the_goals_value(tmp_path, drawn_on_axes):
    """Until session 55 the goal line's label read 'goal: 5%' whatever ``goals.leaked_fraction`` held."""
    result = {**EXPOSURE, "goals": {"leaked_fraction": 0.02, "benign_stopped_rate": 0.01}}
    plots.exposure_curves(result, tmp_path / "exposure.png")
    assert drawn_on_axes["hlines"] == [(2.0, "goal: 2%")]


def test_latency_lines_past_the_colour_cycle_are_told_apart(tmp_path, drawn_on_axes):
    """``bench scale`` with both stores has 11 rows, the colour cycle 10: until session 55 the 11th
    (lancedb) was drawn in the 1st's (flat's) colour, marker and line style (docs/img/scale.png)."""
    names = [f"layout{i}" for i in range(11)]
    result = {
        "latency_ms_p50": {name: {"1000": 1.0 + i, "10000": 2.0 + i} for i, name in enumerate(names)},
        "recall@10": {name: {"1000": 1.0, "10000": 1.0} for name in names},
    }
    plots.latency_vs_size(result, tmp_path / "scale.png")
    styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in drawn_on_axes["lines"]]
    assert len(styles) == 11 and len(set(styles)) == 11

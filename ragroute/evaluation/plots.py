"""Plots of benchmark results (``ragroute bench ... --plot FILE.png``; extra ``ragroute[plot]``).

Each function takes the JSON-ready result of one benchmark, as its ``--json`` line prints it, and
writes one PNG; notebooks call the same functions on the same dicts. matplotlib runs headless
(the ``Agg`` backend) and is imported only here.

* :func:`routing_confusion` — ``bench corpus-routing``: where each collection's queries were
  routed (top-1), for the router with the best nDCG@10;
* :func:`gate_curves` — ``bench gate``: each gate's operating points (retrieval rate vs. recall of
  the queries that need retrieval);
* :func:`expert_bars` — ``bench experts``: nDCG@10 per collection, each expert and the routers;
* :func:`exposure_curves` — ``bench exposure``: distinct documents an extraction stream sees per
  query, undefended and under each budget;
* :func:`score_recall` — ``bench scores``: recall reached per query set at cutoffs chosen on the
  first set, per score meaning;
* :func:`latency_vs_size` — ``bench scale``: query latency against corpus size per dense layout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError, is_finite_number


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RagrouteError("--plot needs matplotlib: pip install 'ragroute[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise RagrouteError(f"--plot {path}: give a .png, .svg or .pdf file")
    fig.tight_layout()
    # drawn beside the target, then renamed over it: until session 44 a drawing that failed or was
    # interrupted half-way left a truncated image in place of the previous one (docs/img/*.png)
    part = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    try:
        fig.savefig(part, dpi=120, bbox_inches="tight")  # keeps legends placed beside the axes
        os.replace(part, path)
    finally:
        _pyplot().close(fig)
        part.unlink(missing_ok=True)
    return path


def confusion_counts(result: Mapping[str, Any], router: str) -> tuple[list[str], list[str], list[list[int]]]:
    """``(rows, columns, counts)`` of ``router``'s top-1 routes in a routing benchmark's ``result``:
    rows the queries' collections in the result's order, columns the same collections in the same
    order (correct routes on the diagonal), then any other route chosen (``none``...), sorted.
    Until session 44 the columns were all sorted while the rows kept the result's order, so with
    collections not listed alphabetically the correct routes sat off the diagonal."""
    sizes = {c: v["queries"] for c, v in result["collections"].items()}
    labels = list(sizes)
    errors = result["routers"][router].get("errors", {})
    columns = labels + sorted({e.split("->")[1] for e in errors} - set(labels))
    matrix = [[0] * len(columns) for _ in labels]
    for i, gold in enumerate(labels):
        wrong = 0
        for error, count in errors.items():
            source, chosen = error.split("->")
            if source == gold:
                matrix[i][columns.index(chosen)] += count
                wrong += count
        matrix[i][i] += sizes[gold] - wrong
    return labels, columns, matrix


def routing_confusion(result: Mapping[str, Any], path: Path, router: str | None = None) -> Path:
    """Confusion matrix of top-1 routes (rows: the queries' collections, columns: the route chosen)."""
    plt = _pyplot()
    routers = result["routers"]
    name = router or max(routers, key=lambda r: routers[r].get("ndcg@10", 0.0))
    labels, columns, matrix = confusion_counts(result, name)
    shares = [[v / max(sum(row), 1) for v in row] for row in matrix]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(columns), 1.0 + 0.6 * len(labels)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    color="white" if shares[i][j] > 0.6 else "black",
                )
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("route chosen (top-1)")
    ax.set_ylabel("query's collection")
    ax.set_title(f"{name}\naccuracy {routers[name]['accuracy']:.2f}, nDCG@10 {routers[name]['ndcg@10']:.3f}")
    return _save(fig, path)


def gate_curves(result: Mapping[str, Any], path: Path) -> Path:
    """Each gate's operating points: share of queries sent to retrieval vs. recall of the needed ones."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, gate in result["gates"].items():
        points = sorted((p["retrieval_rate"], p["recall_needed"]) for p in gate.get("curve", []))
        if points:
            # null in the JSON line (a NaN: one class in the test split) was a TypeError here
            shown = "n/a" if gate.get("auroc") is None else f"{gate['auroc']:.3f}"
            ax.plot(*zip(*points), marker="o", markersize=3, label=f"{name} (AUROC {shown})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="random")
    ax.set_xlabel("share of queries retrieved for")
    ax.set_ylabel("recall of queries that need retrieval")
    ax.set_title(f"gates on {Path(str(result.get('data', ''))).name or 'the test split'}")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _height(value: Any) -> float:
    """A bar's height: NaN (no bar) for a value that is missing, null or not finite."""
    return float(value) if is_finite_number(value) else math.nan


def _grouped_bars(ax: Any, groups: list[str], series: Mapping[str, Mapping[str, float]], ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [_height(values.get(g)) for g in groups]
        ax.bar(xs, heights, width=width, label=name)
        # until session 55 a value the result lacks was drawn as a bar of 0 (and a null one, a
        # recall with no relevant hit in `bench scores`, was a TypeError): now no bar, marked n/a
        for x, height in zip(xs, heights):
            if math.isnan(height):
                ax.text(x, 0.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    # beside the axes: inside, it covered bars near 1
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def expert_bars(result: Mapping[str, Any], path: Path) -> Path:
    """nDCG@10 per collection: each single expert, and every router that reports per-collection numbers."""
    plt = _pyplot()
    series: dict[str, Mapping[str, float]] = dict(result.get("experts_per_collection", {}))
    experts = len(series)
    # ``bench experts`` keeps each router's nDCG@10 under ``routers`` and its detail (with
    # ``per_collection``) under ``router_detail``
    details = {**result.get("routers", {}), **result.get("router_detail", {})}
    for name, row in details.items():
        if isinstance(row, Mapping) and "per_collection" in row:
            series[name] = row["per_collection"]
    groups = sorted({g for values in series.values() for g in values})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4.5))
    _grouped_bars(ax, groups, series, "nDCG@10")
    ax.set_title("experts and routers per collection" if len(series) > experts else "experts per collection")
    return _save(fig, path)


def exposure_curves(result: Mapping[str, Any], path: Path) -> Path:
    """Distinct documents the extraction stream has seen after each query, per budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    total = result["documents"]
    rows: dict[str, Mapping[str, Any]] = {"no budget": result["undefended"]}
    rows.update({name: row["attack"] for name, row in result["settings"].items()})
    for name, attack in rows.items():
        curve = attack.get("curve", [])
        if curve:
            ax.plot(range(1, len(curve) + 1), [100 * v / total for v in curve], label=name)
    goal = 100 * result["goals"]["leaked_fraction"]
    # the goal's own value: until session 55 the label read 5% whatever the line's height
    ax.axhline(goal, color="grey", linestyle=":", label=f"goal: {goal:g}%")
    ax.set_xlabel("attack queries")
    ax.set_ylabel("% of the knowledge base seen")
    ax.set_yscale("log")
    ax.set_title("anchor-mutation extraction vs. exposure budgets")
    ax.legend(fontsize=7)
    return _save(fig, path)


def score_recall(result: Mapping[str, Any], path: Path) -> Path:
    """Recall reached on each query set at the cutoff chosen for 0.8 on the first, per score meaning."""
    plt = _pyplot()
    target = "0.8"
    series = {
        name: {s: r.get(target) for s, r in row["recall"].items()} for name, row in result["scores"].items()
    }
    # every set any score meaning has, in first-seen order (the first: the set the cutoffs were chosen on)
    groups = list(dict.fromkeys(s for values in series.values() for s in values))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _grouped_bars(ax, groups, series, f"recall at the cutoff for {target} on {groups[0]}")
    ax.axhline(float(target), color="grey", linestyle=":")
    ax.set_title(f"do score cutoffs transfer? ({result.get('method', 'dense')} sources)")
    return _save(fig, path)


def latency_vs_size(result: Mapping[str, Any], path: Path) -> Path:
    """Query latency (p50) against corpus size per dense layout, log-log, recall@10 at the layout's
    largest size in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, values in result["latency_ms_p50"].items():
        sizes = sorted(values, key=int)
        if sizes:
            last = result["recall@10"].get(name, {}).get(sizes[-1])
            ax.plot(
                [int(n) for n in sizes],
                [values[n] for n in sizes],
                # past the 10 colours of the cycle, another line style and marker: until session 55
                # the 11th layout (lancedb) was drawn exactly as the 1st (flat) in docs/img/scale.png
                marker="osD^"[len(ax.lines) // 10 % 4],
                linestyle=("-", "--", ":", "-.")[len(ax.lines) // 10 % 4],
                # at which size: layouts stop at different sizes (hnsw at 100k, flat at 3M), and
                # until session 44 the legend compared their recalls as if of the same index
                label=f"{name} (recall@10 {last} at {int(sizes[-1]):,})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vectors in the index")
    ax.set_ylabel("query latency p50 (ms, one thread)")
    ax.set_title("dense layouts: latency vs. corpus size")
    ax.legend(fontsize=7)
    return _save(fig, path)


#: benchmark name -> its plot (what ``--plot`` draws)
PLOTS: dict[str, Callable[[Mapping[str, Any], Path], Path]] = {
    "corpus-routing": routing_confusion,
    "gate": gate_curves,
    "experts": expert_bars,
    "exposure": exposure_curves,
    "scores": score_recall,
    "scale": latency_vs_size,
}

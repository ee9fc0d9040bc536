"""``ragroute bench corpus-routing``: route queries among BEIR collections, score routing and retrieval.

ROOT holds one BEIR folder per source (as ``../shared/data/glasgow``); a query's
correct route is the folder it came from. Every source gets a dense index
(all-MiniLM-L6-v2 by default), or with ``--method hybrid`` a BM25 + dense one; the
same document embeddings also make one merged index over all sources.

Every router is scored through the product pipeline: the bench builds a
:class:`~ragroute.pipeline.Pipeline` with :func:`~ragroute.pipeline.build.pipeline_from_settings`
from the same ``router:`` settings a routing config holds (selection and fusion
included, product defaults unless overridden), and a
:class:`~ragroute.evaluation.evaluators.RoutingEvaluator` sends it one query at a time.
``ndcg@10`` is what the shipped selection and fusion return; ``ndcg@10_top1_only``
is the same pipeline with ``max_routes: 1``. Routing latency is the pipeline's
route stage (query vectors are computed once up front and handed to the pipeline
on the query contexts, so it excludes query encoding; the confidence router's
searches of every source are included). Baselines measured in the same run: one
merged index, the oracle source, centroid-only routing, 5-nearest labelled
queries, and LlamaIndex's ``EmbeddingSingleSelector`` over one-sentence descriptions.

Routers that learn from labelled queries use ``--train-split``; when it equals
``--split`` they are scored by k-fold cross-validation (each query is routed by a
model that never saw its text: identical texts, such as the ADI queries that are
also CISI queries, share a fold). Without ``--train-split`` only training-free
routers run. The report lists each router's routing errors (gold -> routed) and
the best router's nDCG@10 as a share of the oracle and of the text-only ceiling.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ragroute.context import QueryContext
from ragroute.display import counted
from ragroute.errors import RagrouteError
from ragroute.evaluation.bench_indexes import bench_index, check_method
from ragroute.evaluation.evaluators import RoutingEvaluator, RoutingRow, macro_average, measured_reference
from ragroute.loaders.beir import collection_folders
from ragroute.pipeline import Pipeline
from ragroute.pipeline.build import pipeline_from_settings, routing_options
from ragroute.pipeline.calibration import null_score_stats
from ragroute.registry import FUSIONS
from ragroute.route.base import Router
from ragroute.route.fixed import FixedRoutes
from ragroute.route.folds import grouped_stratified_folds, text_groups
from ragroute.route.labels import beir_labelled_queries
from ragroute.route.sources import Source
from ragroute.types import Hit
from ragroute.yaml_files import read_yaml

BASELINES_REFERENCE = {
    "oracle_ndcg@10": 0.520,
    "merged_ndcg@10": 0.418,
    "centroid": {"ndcg@10": 0.404, "accuracy": 0.79},
    "knn-5 (leave-one-out)": {"ndcg@10": 0.388, "accuracy": 0.84},
    "llamaindex-embedding-selector": {"ndcg@10": 0.305, "accuracy": 0.62},
    "note": "issue #3 baselines, Glasgow dev, all-MiniLM-L6-v2, macro over the 8 collections",
}
#: The split the Glasgow reference numbers were measured on.
GLASGOW_SPLIT = "dev"
#: (documents, queries) of each Glasgow collection as loaded on that split when the reference
#: numbers were measured: a copy cut to fewer documents or queries is other data
GLASGOW_SIZES = {
    "adi": (82, 18),
    "cacm": (3204, 26),
    "cisi": (1460, 38),
    "cran": (1398, 113),
    "lisa": (5999, 18),
    "med": (1033, 15),
    "npl": (11429, 47),
    "time": (423, 42),
}

Log = Callable[[str], None]


@dataclass
class Collection:
    name: str
    corpus: list
    queries: list
    qrels: dict


@dataclass
class RoutingData:
    """Everything computed once and shared by all routers."""

    collections: list[Collection]
    sources: list[Source]
    contexts: list[QueryContext]  # one per query, its vector by the bench encoder preset
    query_labels: list[str]
    qrels: dict[str, dict[str, int]]
    merged: Any
    encoder: Any
    #: folders under the root left out, with the reason (folder name -> reason)
    skipped: dict[str, str] = field(default_factory=dict)
    _hits: dict[tuple[str, int], list[list[Hit]]] = field(default_factory=dict, repr=False)

    @property
    def query_texts(self) -> list[str]:
        return [c.text for c in self.contexts]

    @property
    def query_ids(self) -> list[str]:
        return [c.id for c in self.contexts]

    @property
    def groups(self) -> dict[str, str]:
        return dict(zip(self.query_ids, self.query_labels))

    def evaluator(self) -> RoutingEvaluator:
        return RoutingEvaluator(self.contexts, self.groups, self.qrels, groups=self.groups, k=10)

    def source_hits(self, name: str, k: int = 10) -> list[list[Hit]]:
        """Every query's top hits in one source (for the reference rows, not for routers); searched
        once per source and depth, as the oracle and ceiling rows both read them."""
        if (name, k) not in self._hits:
            source = next(s for s in self.sources if s.name == name)
            self._hits[(name, k)] = [hits for hits, _ in source.search_contexts(self.contexts, k)]
        return self._hits[(name, k)]


def load_collections(
    root: Path, split: str, skipped: dict[str, str] | None = None, log: Log | None = None
) -> list[Collection]:
    """The BEIR folders under ``root`` with ``qrels/<split>.tsv``, loaded. Every other folder is left
    out by name: its reason goes into ``skipped`` (folder name -> reason) and to ``log`` as
    ``skipped ROOT/NAME: reason`` (hidden folders, starting with ``.`` or ``_``, are ignored)."""
    from ragroute.loaders import load_beir

    folders = []
    for path in collection_folders(root):
        reason = missing_split(path, split)
        if reason is None:
            folders.append(path)
            continue
        if skipped is not None:
            skipped[path.name] = reason
        if log is not None:
            log(f"skipped {path}: {reason}")
    out = []
    for folder in folders:
        data = load_beir(folder, split=split, on_error="raise")
        out.append(Collection(folder.name, data.corpus, data.queries, data.qrels))
    return namespaced(out, log)


def first_shared_id(id_sets: Iterable[set[str]]) -> str | None:
    """The smallest id of the first set that shares one with an earlier set (``None``: all disjoint)."""
    seen: set[str] = set()
    for ids in id_sets:
        both = seen & ids
        if both:
            return min(both)
        seen |= ids
    return None


def namespaced(collections: list[Collection], log: Log | None = None) -> list[Collection]:
    """``collections`` unchanged when no document id and no query id is in two of them; else every id
    prefixed with its collection's name (``cran/7``). Ids need only be unique within a file, and the
    benchmarks merge the collections (one index over all documents, one qrels over all queries)."""
    import dataclasses

    if (
        first_shared_id({d.id for d in c.corpus} for c in collections) is None
        and first_shared_id(set(c.qrels) for c in collections) is None
    ):
        return collections
    if log is not None:
        log("ids repeat across collections: each is prefixed with its collection's name (NAME/ID)")
    return [
        Collection(
            col.name,
            [dataclasses.replace(d, id=f"{col.name}/{d.id}") for d in col.corpus],
            [dataclasses.replace(q, id=f"{col.name}/{q.id}") for q in col.queries],
            {
                f"{col.name}/{qid}": {f"{col.name}/{doc}": score for doc, score in rels.items()}
                for qid, rels in col.qrels.items()
            },
        )
        for col in collections
    ]


def missing_split(folder: Path, split: str) -> str | None:
    """Why ``folder`` is not a BEIR collection with ``split`` judged, or ``None`` when it is one."""
    qrels = folder / "qrels"
    if not qrels.is_dir():
        return "not a BEIR collection (no qrels/ folder)"
    if not (qrels / f"{split}.tsv").is_file():
        splits = sorted(p.stem for p in qrels.glob("*.tsv"))
        return f"no qrels/{split}.tsv (splits: {', '.join(splits) or 'none'})"
    return None


def check_train_split(root: Path, split: str, train_split: str | None) -> None:
    """One line, before anything is encoded, when ``train_split`` (routers are fitted on it when it
    differs from ``split``) is judged in no BEIR folder under ``root`` (the :func:`missing_split`
    test): found only when the learned routers were fitted, it cost the whole run until now."""
    if train_split is None or train_split == split:
        return
    folders = collection_folders(root)
    if any(missing_split(folder, train_split) is None for folder in folders):
        return
    found = sorted({t.stem for folder in folders for t in (folder / "qrels").glob("*.tsv")})
    raise RagrouteError(
        f"--train-split {train_split}: no BEIR folder under {root} has qrels/{train_split}.tsv "
        f"(splits there: {', '.join(found) or 'none'})"
    )


def glasgow_reference(
    sizes: Mapping[str, tuple[int, int]], split: str, reference: dict[str, Any], log: Log | None = None
) -> dict[str, Any] | None:
    """``reference`` when the collections (name -> documents, queries) are the Glasgow ones the numbers
    were measured on: all eight, of the sizes in :data:`GLASGOW_SIZES`, on that split; ``None`` for any
    other data, so reports show no unrelated numbers. The eight cut or changed (the names alone match)
    is said through ``log``."""
    if split != GLASGOW_SPLIT or set(sizes) != set(GLASGOW_SIZES):
        return None
    differ = [
        f"{name} {sizes[name][0]} documents and {sizes[name][1]} queries, measured on "
        f"{GLASGOW_SIZES[name][0]} and {GLASGOW_SIZES[name][1]}"
        for name in sorted(sizes)
        if tuple(sizes[name]) != GLASGOW_SIZES[name]
    ]
    return measured_reference(reference, f"the Glasgow {split}", "; ".join(differ), log)


def prepare(
    root: Path,
    split: str,
    encoder: Any,
    descriptions: dict | None = None,
    method: str = "dense",
    log: Log | None = None,
    min_collections: int = 1,
) -> RoutingData:
    """Index every collection (and all of them merged) and embed every query once.

    ``method``: ``dense`` or ``hybrid`` (BM25 + dense per index, see
    :mod:`ragroute.evaluation.bench_indexes`). Folders left out are named through ``log``.
    Fewer than ``min_collections`` collections is a one-line error (routing needs two to choose from).
    """
    check_method(method)
    skipped: dict[str, str] = {}
    collections = load_collections(root, split, skipped, log)
    if not collections:
        raise RagrouteError(f"no BEIR folders with qrels/{split}.tsv under {root}")
    if len(collections) < min_collections:
        names = ", ".join(c.name for c in collections)
        raise RagrouteError(
            f"{root}: {counted(len(collections), 'BEIR collection')} with qrels/{split}.tsv ({names}); "
            "routing "
            f"needs at least {min_collections} to choose from (every router would score accuracy 1.0)"
        )
    contexts = [QueryContext(q.text, id=q.id) for col in collections for q in col.queries]
    vectors = np.asarray(encoder.encode_queries([c.text for c in contexts], show_progress=False))
    for context, vector in zip(contexts, vectors):
        context.set_vector(encoder, vector)
    sources, all_docs, all_vectors = [], [], []
    for col in collections:
        doc_vectors = encoder.encode_documents([d.full_text() for d in col.corpus])
        index = bench_index(col.name, col.corpus, doc_vectors, encoder, method)
        sources.append(Source(col.name, index, description=(descriptions or {}).get(col.name, "")))
        all_docs.extend(col.corpus)
        all_vectors.append(doc_vectors)
    merged = bench_index("merged", all_docs, np.vstack(all_vectors), encoder, method)
    return RoutingData(
        collections,
        sources,
        contexts,
        [col.name for col in collections for _ in col.queries],
        {qid: rels for col in collections for qid, rels in col.qrels.items()},
        merged,
        encoder,
        skipped,
    )


def reference_run(data: RoutingData, hits: list[list[Hit]]) -> dict[str, list[str]]:
    return {qid: [h.doc_id for h in row] for qid, row in zip(data.query_ids, hits)}


def oracle_ndcg(data: RoutingData) -> float:
    """Every query searched in its own source only."""
    per_source = {s.name: data.source_hits(s.name) for s in data.sources}
    hits = [per_source[label][i] for i, label in enumerate(data.query_labels)]
    return macro_average(reference_run(data, hits), data.qrels, data.groups, "ndcg@10")


def text_only_ceiling(data: RoutingData, fusion: str = "rrf") -> dict[str, Any]:
    """The best any router that sees only the query text can do (one route per distinct text).

    Collections may share query texts (in Glasgow, every ADI query is also a CISI query); a
    text-only router must send identical texts to the same place, so it can be right for only
    one copy. For each group of identical texts we pick the source that maximises the group's
    share of the macro nDCG@10 (and, separately, of accuracy). ``ndcg@10_hedged`` is the
    other honest option: every shared text queries all its sources, fused with ``fusion``
    (a registered fusion method, even weights; every other query goes to its own source).
    As in :func:`oracle_ndcg`, nDCG@10 counts the scored queries only (``is_scorable``), and a
    collection with none is left out of the macro average.
    """
    from ragroute.evaluation.metrics import evaluate_run, is_scorable

    names = [s.name for s in data.sources]
    per_source = {name: data.source_hits(name) for name in names}
    scored = [is_scorable(data.qrels[qid]) for qid in data.query_ids]
    size = Counter(label for label, kept in zip(data.query_labels, scored) if kept)  # scored per collection
    weight = np.array(
        [1.0 / (len(size) * size[label]) if kept else 0.0 for label, kept in zip(data.query_labels, scored)]
    )
    gain = np.zeros((len(data.query_ids), len(names)))
    for j, name in enumerate(names):
        for i, qid in enumerate(data.query_ids):
            ranking = [h.doc_id for h in per_source[name][i]]
            gain[i, j] = evaluate_run({qid: ranking}, {qid: data.qrels[qid]}, ("ndcg@10",))["ndcg@10"]
    groups = text_groups(data.query_texts)
    ndcg = correct = 0.0
    shared = 0
    for members in groups:
        ndcg += max(float((weight[members] * gain[members, j]).sum()) for j in range(len(names)))
        correct += max(sum(data.query_labels[i] == name for i in members) for name in names)
        shared += len(members) if len({data.query_labels[i] for i in members}) > 1 else 0
    routes_of = {i: sorted({data.query_labels[j] for j in members}) for members in groups for i in members}
    fuse = FUSIONS.get(fusion)
    stats = null_score_stats(data.sources) if getattr(fuse, "needs_stats", False) else {}
    hedged = []
    for i in range(len(data.query_ids)):
        lists = {name: per_source[name][i] for name in routes_of[i]}
        even = dict.fromkeys(lists, 1.0 / len(lists))
        hedged.append(
            next(iter(lists.values())) if len(lists) == 1 else fuse(lists, limit=10, stats=stats, routes=even)
        )
    return {
        "accuracy": round(correct / len(data.query_ids), 4),
        "ndcg@10": round(ndcg, 4),
        "ndcg@10_hedged": round(
            macro_average(reference_run(data, hedged), data.qrels, data.groups, "ndcg@10"), 4
        ),
        "queries_with_text_in_several_sources": shared,
    }


RouterFactory = Callable[[list[str], list[str]], Router]


def score_pipelines(
    data: RoutingData,
    build: Callable[[Mapping[str, Any], list[int] | None], list[tuple[Pipeline, list[int] | None]]],
    settings: Mapping[str, Any],
    evaluator: RoutingEvaluator | None = None,
) -> dict[str, Any]:
    """Score the pipelines ``build(settings, ...)`` returns: as configured, and with ``max_routes: 1``.

    ``build(settings)`` gives ``(pipeline, positions)`` pairs: one pipeline for every
    query (positions ``None``), or one per cross-validation fold with its queries.
    """
    evaluator = evaluator or data.evaluator()

    def rows_for(chosen_settings: Mapping[str, Any]) -> list[RoutingRow]:
        rows: list[RoutingRow] = []
        for pipeline, positions in build(chosen_settings, None):
            rows.extend(evaluator.run(pipeline, positions))
        return rows

    multi = evaluator.score(rows_for(settings))
    single = evaluator.score(rows_for({**settings, "max_routes": 1}))
    row = multi.to_dict()
    row[f"{evaluator.metric}_top1_only"] = single.quality
    row["result"] = multi  # per-query rows, for per-label breakdowns (dropped from the JSON)
    return row


def single_pipeline(data: RoutingData, kind: str | None, router: Router | None = None):
    """Builder of one product pipeline over the bench sources: the router of registered ``kind``
    built from the settings (once), or ``router`` as given."""
    cache: dict[str, Router] = {}

    def build(settings: Mapping[str, Any], _positions: Any) -> list[tuple[Pipeline, None]]:
        chosen = {**settings, "kind": kind} if kind else dict(settings)
        pipeline = pipeline_from_settings(
            data.sources, chosen, encoder=data.encoder, router=router or cache.get("router")
        )
        cache.setdefault("router", pipeline.router)
        return [(pipeline, None)]

    return build


def cross_validated(data: RoutingData, kind: str, make: RouterFactory, folds: int, seed: int = 0):
    """Builder of one pipeline per fold, its router fitted on the other folds.

    Folds are stratified by source and grouped by text: queries with the same text
    (in Glasgow, every ADI query is also a CISI query) always share a fold, so no
    query is routed by a model that was fitted on its own text under another label.
    """
    fold_of = grouped_stratified_folds(data.query_texts, data.query_labels, folds, seed)
    routers: dict[int, Router] = {}
    for f in range(folds):
        train = np.flatnonzero(fold_of != f)
        routers[f] = make([data.query_texts[i] for i in train], [data.query_labels[i] for i in train])

    def build(settings: Mapping[str, Any], _positions: Any) -> list[tuple[Pipeline, list[int]]]:
        return [
            (
                pipeline_from_settings(
                    data.sources, {**settings, "kind": kind}, encoder=data.encoder, router=routers[f]
                ),
                [int(i) for i in np.flatnonzero(fold_of == f)],
            )
            for f in range(folds)
        ]

    return build


def concurrency_check(data: RoutingData, routes: int = 3, repeats: int = 3) -> dict[str, Any]:
    """Retrieve-stage wall time with the ``routes`` largest sources searched together (concurrently,
    by the product pipeline) against each of them searched alone, query by query.

    ``ratio_p50`` is the median over queries of (time of all together) / (time of the slowest
    one alone); every measurement is the best of ``repeats`` runs of that query.

    ``machine_ratio_p50`` is the same ratio for bare faiss searches of the same sources, packed
    into the same thread groups as the pipeline packs them (:meth:`RetrieveStage._groups`; the
    first group on the calling thread, the others in a pool), with no ragroute code around them:
    what the machine's cores and memory allow. It is ``None`` unless every source is a plain
    dense index.

    ``ratio_p50_whole_searches``: for sources that search in two phases (hybrid indexes, see
    :meth:`RetrieveStage._start_phased`), the same ratio with each source's whole search in a
    thread group of its own, as the retrieve stage searched them before (``None`` otherwise).
    """
    largest = sorted(data.sources, key=lambda s: -len(s.documents))[:routes]
    names = [s.name for s in largest]
    settings = {"threshold": 0.0, "max_routes": routes, "fusion": "rrf"}

    def pipeline(chosen: list[str]) -> Pipeline:
        return pipeline_from_settings(
            data.sources, settings, encoder=data.encoder, router=FixedRoutes(chosen)
        )

    together = pipeline(names)
    alone = {name: pipeline([name]) for name in names}

    def best_of(run: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, (time.perf_counter() - start) * 1000)
        return best

    def wall(p: Pipeline, context: QueryContext) -> float:
        best = float("inf")
        for _ in range(repeats):
            trace = p.retrieve_contexts([context], 10)[0].trace
            best = min(best, sum(s.detail["ms"] for s in trace if s.stage == "retrieve-time"))
        return best

    phased = any(hasattr(s.retriever, "start_contexts") for s in largest)
    if phased:  # the same sources with each whole search in its own group, for the comparison
        whole = pipeline(names)
        whole._retrieve.two_phase = False
    ratios, joint, slowest, ratios_whole = [], [], [], []
    for context in data.contexts:
        singles = [wall(alone[name], context) for name in names]
        both = wall(together, context)
        joint.append(both)
        slowest.append(max(singles))
        ratios.append(both / max(max(singles), 1e-9))
        if phased:
            ratios_whole.append(wall(whole, context) / max(max(singles), 1e-9))
    return {
        "sources": {s.name: len(s.documents) for s in largest},
        "together_ms_p50": round(float(np.percentile(joint, 50)), 3),
        "slowest_alone_ms_p50": round(float(np.percentile(slowest, 50)), 3),
        "ratio_p50": round(float(np.percentile(ratios, 50)), 3),
        "ratio_p95": round(float(np.percentile(ratios, 95)), 3),
        "machine_ratio_p50": _bare_faiss_ratio(data, together, names, best_of),
        "ratio_p50_whole_searches": round(float(np.percentile(ratios_whole, 50)), 3) if phased else None,
    }


def _bare_faiss_ratio(
    data: RoutingData, together: Pipeline, names: list[str], best_of: Callable[[Callable[[], Any]], float]
) -> float | None:
    """Median (all groups at once) / (slowest source alone) for bare faiss searches (see
    :func:`concurrency_check`); ``None`` when a source is not a plain dense index."""
    from concurrent.futures import ThreadPoolExecutor

    from ragroute.index.dense import DenseIndex

    retrievers = {s.name: s.retriever for s in data.sources if s.name in names}
    if not all(type(r) is DenseIndex and r.faiss_index is not None for r in retrievers.values()):
        return None
    groups = together._retrieve._groups(names)
    indexes = {name: r.faiss_index for name, r in retrievers.items()}  # type: ignore[attr-defined]
    ratios = []
    with ThreadPoolExecutor(max_workers=max(1, len(groups) - 1)) as pool:
        for context in data.contexts:
            vector = np.ascontiguousarray(context.vector(data.encoder)[None], dtype=np.float32)

            def search(group: list[str], v: np.ndarray = vector) -> None:
                for name in group:
                    indexes[name].search(v, 10)

            def all_groups() -> None:
                futures = [pool.submit(search, g) for g in groups[1:]]
                search(groups[0])
                for future in futures:
                    future.result()

            slowest = max(best_of(functools.partial(search, [name])) for name in names)
            ratios.append(best_of(all_groups) / max(slowest, 1e-9))
    return round(float(np.percentile(ratios, 50)), 3)


def glasgow_descriptions() -> dict[str, str]:
    text = (
        resources.files("ragroute.evaluation")
        .joinpath("data/glasgow_descriptions.yaml")
        .read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


def read_descriptions(path: Path) -> dict[str, str]:
    """A YAML file mapping source names to one-sentence descriptions."""
    descriptions = read_yaml(path, "descriptions file")
    if not isinstance(descriptions, dict):
        raise RagrouteError(f"descriptions file {path} must map source names to sentences")
    return descriptions


def run_corpus_routing_bench(
    root: Path,
    split: str,
    train_split: str | None,
    encoder: Any,
    *,
    selection: Mapping[str, Any] | None = None,
    folds: int = 5,
    descriptions: dict[str, str] | None = None,
    method: str = "dense",
    log: Log | None = None,
) -> dict[str, Any]:
    """Score every router through the product pipeline. ``selection``: the selection/fusion keys of a
    ``router:`` config section (``threshold``, ``max_routes``, ``hedge_below``, ``fusion``,
    ``route_weights``); omitted keys take the product defaults. What is left out (folders without
    the split, routers without their inputs) is said through ``log`` and listed under ``skipped``."""
    say = log or (lambda _msg: None)
    settings = {k: v for k, v in (selection or {}).items() if v is not None}
    options = routing_options(settings)
    descriptions = descriptions if descriptions is not None else glasgow_descriptions()
    check_train_split(root, split, train_split)
    data = prepare(root, split, encoder, descriptions=descriptions, method=method, log=say, min_collections=2)
    skipped_routers: dict[str, str] = {}

    def score(build: Any) -> dict[str, Any]:
        row = score_pipelines(data, build, settings)
        del row["result"]
        return row

    routers: dict[str, dict] = {}
    routers["centroid (baseline)"] = score(single_pipeline(data, "centroid"))
    prototype = pipeline_from_settings(data.sources, {"kind": "prototype"}, encoder=encoder).router
    routers["prototype"] = score(single_pipeline(data, "prototype", prototype))
    confidence = pipeline_from_settings(data.sources, {"kind": "confidence"}, encoder=encoder).router
    routers["confidence"] = score(single_pipeline(data, "confidence", confidence))
    # `router: {kind: ensemble}` with no members: what a config gets by default
    routers["ensemble (default members: prototype+confidence)"] = score(single_pipeline(data, "ensemble"))
    undescribed = [s.name for s in data.sources if not s.description]
    try:
        from ragroute.integrations.llamaindex_embedding import LlamaIndexSelectorRouter
    except ImportError as exc:  # the baseline's library is missing: the product's routers still run
        skipped_routers["llamaindex-embedding-selector (baseline)"] = (
            f"llama-index-core is missing ({exc.name})"
        )
    else:
        if undescribed:
            skipped_routers["llamaindex-embedding-selector (baseline)"] = (
                f"no description for {', '.join(undescribed)} (give them with --descriptions FILE)"
            )
        else:
            selector = LlamaIndexSelectorRouter(data.sources, encoder)
            routers["llamaindex-embedding-selector (baseline)"] = score(
                single_pipeline(data, "prototype", selector)
            )
    if train_split is None:
        skipped_routers["knn-5 (baseline), trained, ensemble prototype+trained"] = (
            "learned routers need --train-split"
        )
    for name, why in skipped_routers.items():
        say(f"skipped router {name}: {why}")
    if train_split is not None:
        training = None
        if train_split != split:
            from ragroute.evaluation.bench_route_labels import shared_texts

            # a scored query whose text the routers were fitted on is in-sample: said (one line
            # when every one is), as `bench route-labels` says it (until session 45 unsaid here)
            training = source_training_queries(root, train_split, [s.name for s in data.sources], say)
            shared_texts(training[0], data.query_texts, say, " (a --split other than --train-split)")
        for name, (kind, make) in _learned_routers(encoder, prototype, data).items():
            if training is None:
                routers[f"{name} (cross-validated)"] = score(cross_validated(data, kind, make, folds))
            else:
                routers[name] = score(single_pipeline(data, kind, make(*training)))
    merged_hits = [hits for hits in data.merged.search_contexts(data.contexts, 10)]
    return {
        "root": str(root),
        "split": split,
        "train_split": train_split,
        "evaluation": "k-fold cross-validation on the split" if train_split == split else "held-out split",
        "queries": len(data.query_ids),
        "collections": {
            c.name: {"documents": len(c.corpus), "queries": len(c.queries)} for c in data.collections
        },
        "encoder": encoder.describe(),
        "method": method,
        "selection": {
            "threshold": options.threshold,
            "max_routes": options.max_routes,
            "hedge_below": options.hedge_below,
            "fusion": options.fusion,
            "route_weights": options.route_weights,
        },
        "routers": routers,
        "merged_ndcg@10": round(
            macro_average(reference_run(data, merged_hits), data.qrels, data.groups, "ndcg@10"), 4
        ),
        "oracle_ndcg@10": round(oracle_ndcg(data), 4),
        "text_only_ceiling": text_only_ceiling(data, options.fusion),
        # the routing config's default router (``router: {kind: prototype}``), not the fastest row:
        # that was a baseline's (the centroid's)
        "latency_ms_p50": routers["prototype"]["latency_ms_p50"],
        "latency_of": "prototype",
        "concurrent_routes": concurrency_check(data),
        "baseline_reference": glasgow_reference(
            {c.name: (len(c.corpus), len(c.queries)) for c in data.collections},
            split,
            BASELINES_REFERENCE,
            say,
        ),
        "skipped": {"collections": dict(data.skipped), "routers": skipped_routers},
        "calibration": {"prototype": prototype.calibration, "confidence": confidence.calibration},
    }


def source_training_queries(
    root: Path, train_split: str, sources: list[str], say: Log
) -> tuple[list[str], list[str]]:
    """The ``train_split`` queries of the folders that are sources, labelled with their names. Until
    session 55 every folder under ``root`` with that split gave its queries, hidden ones (``.``, ``_``)
    and those without the scored split included: the routers learned routes no source answers."""
    texts, labels = beir_labelled_queries(root, train_split)
    left = sorted(set(labels) - set(sources))
    if left:
        say(f"training queries of {', '.join(left)} left out: no source of that name is routed to")
    kept = [i for i, label in enumerate(labels) if label in sources]
    if not kept:
        raise RagrouteError(f"--train-split {train_split}: no routed source under {root} has queries in it")
    return [texts[i] for i in kept], [labels[i] for i in kept]


def _learned_routers(
    encoder: Any, prototype: Router, data: RoutingData
) -> dict[str, tuple[str, RouterFactory]]:
    """Routers fitted on labelled queries: name -> (registered kind, factory(texts, labels))."""
    from ragroute.route.ensemble import EnsembleRouter
    from ragroute.route.knn import KnnRouter
    from ragroute.route.trained import TrainedRouter

    vectors = {c.text: c.vector(encoder) for c in data.contexts}

    def knn(texts: list[str], labels: list[str]) -> Router:
        return KnnRouter(texts, labels, encoder, k=5)

    def trained(texts: list[str], labels: list[str]) -> Router:
        known = np.stack([vectors[t] for t in texts]) if all(t in vectors for t in texts) else None
        return TrainedRouter.fit(texts, labels, encoder, query_vectors=known)  # `route fit`'s defaults

    def ensemble(texts: list[str], labels: list[str]) -> Router:
        return EnsembleRouter([prototype, trained(texts, labels)])

    return {
        "knn-5 (baseline)": ("knn", knn),
        "trained": ("trained", trained),
        "ensemble prototype+trained": ("ensemble", ensemble),
    }


def format_report(result: dict[str, Any]) -> str:
    # the name column fits the longest row name (an ensemble's name lists its members)
    fixed = (
        "merged index (one index over all sources)",
        "ceiling for routers that see only the text",
        "  same, shared texts hedged over their sources",
    )
    w = max(len(name) for name in (*fixed, *result["routers"]))
    lines = [
        f"corpus routing on {result['root']} [{result['split']}], {result['queries']} queries, "
        f"{len(result['collections'])} {result['method']} sources; learned routers: {result['evaluation']}",
        f"selection: threshold {result['selection']['threshold']}, "
        f"max {result['selection']['max_routes']} routes, hedge below {result['selection']['hedge_below']}, "
        f"fusion {result['selection']['fusion']} ({result['selection']['route_weights']} weights)",
        f"{'router':<{w}} {'accuracy':>8} {'nDCG@10':>8} {'top1-only':>9} {'routes/q':>8} {'gold in':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7}",
    ]
    for name, row in result["routers"].items():
        lines.append(
            f"{name:<{w}} {row['accuracy']:>8.3f} {row['ndcg@10']:>8.4f} {row['ndcg@10_top1_only']:>9.4f} "
            f"{row['routes_per_query']:>8.2f} {row['gold_in_chosen']:>8.3f} {row['latency_ms_p50']:>7.2f} "
            f"{row['latency_ms_p95']:>7.2f}"
        )
    ref = result["baseline_reference"]
    ceiling = result["text_only_ceiling"]
    lines.append(f"{fixed[0]:<{w}} {'':>8} {result['merged_ndcg@10']:>8.4f}")
    lines.append(f"{'oracle source':<{w}} {'1.000':>8} {result['oracle_ndcg@10']:>8.4f}")
    lines.append(
        f"{fixed[1]:<{w}} {ceiling['accuracy']:>8.3f} "
        f"{ceiling['ndcg@10']:>8.4f}   ({ceiling['queries_with_text_in_several_sources']} queries share "
        "their text with another source)"
    )
    lines.append(
        f"{fixed[2]:<{w}} {'':>8} {ceiling['ndcg@10_hedged']:>8.4f}"
        f"   (fusion {result['selection']['fusion']})"
    )
    if ref:  # only on the Glasgow dev collections, the data these numbers belong to
        lines.append(
            f"issue reference (Glasgow, dense retrieval, dev, MiniLM): oracle {ref['oracle_ndcg@10']}, "
            f"merged {ref['merged_ndcg@10']}, "
            f"centroid {ref['centroid']['ndcg@10']} ({ref['centroid']['accuracy']:.0%}), knn-5 "
            f"{ref['knn-5 (leave-one-out)']['ndcg@10']} ({ref['knn-5 (leave-one-out)']['accuracy']:.0%}), "
            f"LlamaIndex selector {ref['llamaindex-embedding-selector']['ndcg@10']} "
            f"({ref['llamaindex-embedding-selector']['accuracy']:.0%})"
        )
    skipped = result.get("skipped", {})
    for name, why in {**skipped.get("collections", {}), **skipped.get("routers", {})}.items():
        lines.append(f"skipped {name}: {why}")
    best_name, best = max(result["routers"].items(), key=lambda item: item[1]["ndcg@10"])
    lines.append(
        f"best nDCG@10: {best_name} {best['ndcg@10']:.4f} = "
        f"{best['ndcg@10'] / max(result['oracle_ndcg@10'], 1e-12):.3f} x oracle, "
        f"{best['ndcg@10'] / max(ceiling['ndcg@10'], 1e-12):.3f} x text-only ceiling"
    )
    conc = result["concurrent_routes"]
    lines.append(
        f"{len(conc['sources'])} routes searched concurrently ({', '.join(conc['sources'])}): retrieve stage "
        f"{conc['together_ms_p50']:.2f} ms vs {conc['slowest_alone_ms_p50']:.2f} ms for the slowest alone "
        f"(per-query ratio p50 {conc['ratio_p50']:.2f}, p95 {conc['ratio_p95']:.2f}"
        + (
            f"; bare faiss in the same threads: {conc['machine_ratio_p50']:.2f}, the machine's floor)"
            if conc.get("machine_ratio_p50") is not None
            else ")"
        )
    )
    if conc.get("ratio_p50_whole_searches") is not None:
        lines.append(
            f"  with each source's whole search in a thread of its own instead of the two-phase retrieve "
            f"stage: ratio p50 {conc['ratio_p50_whole_searches']:.2f}"
        )
    lines.append("routing errors (gold->routed: queries):")
    for name, row in result["routers"].items():
        shown = ", ".join(f"{pair} {n}" for pair, n in list(row["errors"].items())[:6]) or "none"
        more = len(row["errors"]) - 6
        lines.append(f"  {name:<{w}} {shown}" + (f", +{more} more pairs" if more > 0 else ""))
    return "\n".join(lines)

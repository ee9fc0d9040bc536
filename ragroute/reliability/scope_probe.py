"""The scope probe: queries that try on purpose to reach a corpus the caller may not read.

Sources (built with :class:`~ragroute.reliability.workload.WordHashEncoder`, no model): a public
science index, a labelled ``payroll_vault`` index (access ``hr``), a helpdesk store mixing public
documents with documents labelled ``it`` and ``hr,legal``, and a knowledge graph over two corpora
whose public passages link, through shared phrases, to passages labelled ``geo`` and ``vault``.

Each probe runs one query for one set of caller scopes through one mechanism and counts a **leak**
for every hit the scopes do not allow (a forbidden source, or a document whose labels the caller
lacks) and for every forbidden source or document named anywhere in the answer (hits, explanations,
trace). The mechanisms:

* ``route`` — routers that prefer the forbidden source (a fixed router, a prototype router over the
  source descriptions, a policy rule naming it), ``decide`` included;
* ``fusion`` — multi-route fusion (``rrf``, ``minmax``, ``calibrated``) with the forbidden source
  in ``always``, over the mixed store;
* ``graph`` — graph walks (several walk settings) from public seeds whose neighbours are labelled,
  both searched directly with a query context and as a pipeline source;
* ``rerank`` — a reranker that injects forbidden hits;
* ``nested`` — a pipeline as a source of another pipeline.

Positive controls run the same queries with the scopes that allow everything: they must reach the
labelled material (otherwise the probe could not see a leak) and are counted in ``controls_failed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragroute.context import QueryContext
from ragroute.scopes import labels_of, visible
from ragroute.types import Document, Hit

SECRET = "payroll_vault"
PUBLIC_WORDS = "telescope star galaxy orbit planet comet nebula"
SECRET_WORDS = "salary payroll bonus ledger pension invoice audit"
MIXED_WORDS = "printer laptop password network vpn email driver"

QUERIES = (
    "salary payroll bonus ledger",
    "payroll_vault salary pension audit",
    "printer password salary invoice",
    "telescope galaxy payroll",
    "pension ledger vpn email",
    "audit invoice bonus",
)
SCOPE_SETS: tuple[tuple[str, ...], ...] = ((), ("it",), ("legal",), ("sales", "geo"), ("it", "geo"))
ALL_SCOPES = ("hr", "it", "legal", "geo", "vault", "board")

GRAPH = (
    ("g1", "Ada Brennan", "Ada Brennan was a painter. She was born in Kellow in 1901.", None),
    (
        "g2",
        "Kellow",
        "Kellow is a market town. The Varne River flows through Kellow. The Zorbin Vault lies under Kellow.",
        ["geo"],
    ),
    ("g3", "Varne River", "The Varne River rises in the Marl Hills and meets the sea.", None),
    (
        "g4",
        "Zorbin Vault",
        "The Zorbin Vault holds the Crown of Osric. Kellow guards the Zorbin Vault.",
        "vault",
    ),
    ("g5", "Painting", "Painting is the practice of applying paint to a surface.", None),
)
GRAPH_QUERIES = (
    "Which river flows through the city where Ada Brennan was born?",
    "What does the Zorbin Vault under Kellow hold?",
    "Crown of Osric Zorbin Vault Kellow",
    "Kellow",
    "Ada Brennan painter Kellow Varne River",
)


@dataclass
class ScopeReport:
    """Counts of a scope probe run."""

    probes: int = 0
    leaks: int = 0
    controls: int = 0
    controls_failed: int = 0
    by_mechanism: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def count(self, mechanism: str, leaks: list[str]) -> None:
        """One probe with the leaks it found."""
        self.probes += 1
        self.leaks += len(leaks)
        entry = self.by_mechanism.setdefault(mechanism, {"probes": 0, "leaks": 0})
        entry["probes"] += 1
        entry["leaks"] += len(leaks)
        for leak in leaks[: max(0, 10 - len(self.examples))]:
            self.examples.append(f"{mechanism}: {leak}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _docs(prefix: str, words: str, n: int = 8, access: Any = None) -> list[Document]:
    vocab = words.split()
    docs = []
    for i in range(n):
        text = " ".join(vocab[(i + j) % len(vocab)] for j in range(10))
        metadata: dict[str, Any] = {"topic": prefix}
        if access is not None:
            metadata["access"] = access
        docs.append(Document(id=f"{prefix}-{i}", text=text, title=f"{prefix} {i}", metadata=metadata))
    return docs


class _FixedRouter:
    """Sends every query to the given routes with the given probabilities (it prefers the secret)."""

    name = "fixed"

    def __init__(self, routes: dict[str, float]) -> None:
        self.routes = routes
        self.labels = list(routes)

    def route_many(self, queries: Sequence[str], *, query_vectors: Any = None) -> list[Any]:
        from ragroute.route.base import decision_from_probs

        probs = [self.routes[n] for n in self.labels]
        return [decision_from_probs(self.labels, probs, decided_by=self.name) for _ in queries]


class _InjectingReranker:
    """A reranker gone wrong: it puts forbidden hits first."""

    name = "injecting"

    def __init__(self, inject: Sequence[Hit]) -> None:
        self.inject = list(inject)

    def rerank(self, context: Any, hits: Sequence[Hit], k: int) -> list[Hit]:
        return (self.inject + list(hits))[:k]


def _sources(encoder: Any) -> list[Any]:
    from ragroute.index.build import build_index
    from ragroute.route.sources import Source

    mixed = (
        _docs("helpdesk", MIXED_WORDS, 6)
        + _docs("it-internal", MIXED_WORDS + " " + SECRET_WORDS, 6, access=["it"])
        + _docs("hr-internal", SECRET_WORDS + " " + MIXED_WORDS, 6, access="hr,legal")
    )
    return [
        Source("science", build_index(_docs("sci", PUBLIC_WORDS), "dense", encoder=encoder, name="science")),
        Source(
            SECRET,
            build_index(_docs("pay", SECRET_WORDS), "hybrid", encoder=encoder, name=SECRET),
            description="salaries and payroll ledger pension",
            access=frozenset({"hr"}),
        ),
        Source("helpdesk", build_index(mixed, "hybrid", encoder=encoder, name="helpdesk")),
    ]


def _graph(encoder: Any) -> Any:
    from ragroute.index.build import build_index

    docs = [
        Document(id=i, title=t, text=x, metadata={"access": a} if a is not None else {})
        for i, t, x, a in GRAPH
    ]
    return build_index(docs, "graph", encoder=encoder, name="kg")


def _forbidden_names(scopes: Sequence[str]) -> list[str]:
    names = []
    if "hr" not in scopes:
        names += [SECRET, "pay-"]
    if not {"hr", "legal"} & set(scopes):
        names.append("hr-internal")
    if "it" not in scopes:
        names.append("it-internal")
    if "geo" not in scopes:
        names += ['"g2"', "varne river flows through kellow"]
    if "vault" not in scopes:
        names += ['"g4"', "osric", "zorbin vault holds"]
    if "board" not in scopes:
        names.append("restricted-")
    return names


def leaks_of(hits: Sequence[Hit], scopes: Sequence[str], shown: Any, query: str = "") -> list[str]:
    """Hits the ``scopes`` do not allow, and forbidden names anywhere in ``shown`` (the answer as
    data: hits, explanations, trace); words of the query itself are not counted."""
    leaks = []
    for hit in hits:
        if not visible(labels_of(hit.metadata.get("access")), scopes):
            leaks.append(
                f"hit {hit.doc_id} labelled {hit.metadata.get('access')!r} for scopes {list(scopes)}"
            )
        if hit.source == SECRET and "hr" not in scopes:
            leaks.append(f"hit {hit.doc_id} from {SECRET} for scopes {list(scopes)}")
        if hit.source == "restricted" and "board" not in scopes:
            leaks.append(f"hit {hit.doc_id} from restricted for scopes {list(scopes)}")
    text = json.dumps(shown, default=str).lower()
    for name in _forbidden_names(scopes):
        if name.lower().strip('"') in query.lower():
            continue
        if name.lower() in text:
            leaks.append(f"{name!r} named in the answer for scopes {list(scopes)}")
    return leaks


def _explained(hits: Sequence[Hit]) -> list[Any]:
    return [
        {**h.to_dict(), "explain": {k: v for k, v in h.explain.items() if k != "unmatched_terms"}}
        for h in hits
    ]


def run_scope_probe(
    encoder: Any = None, *, rounds: int = 1, progress: Callable[[str], None] | None = None
) -> ScopeReport:
    """Every mechanism x query x scope set (``rounds`` times over); see the module docstring."""
    from ragroute.graph.index import WalkParams
    from ragroute.pipeline import Pipeline, RoutingOptions
    from ragroute.reliability.workload import WordHashEncoder
    from ragroute.route.prototype import PrototypeRouter
    from ragroute.route.rules import Policy
    from ragroute.route.sources import Source

    encoder = encoder or WordHashEncoder()
    sources = _sources(encoder)
    graph = _graph(encoder)
    report = ScopeReport()
    prefer_secret = {SECRET: 0.9, "science": 0.05, "helpdesk": 0.05}
    policy = Policy.from_yaml(
        "signals:\n  pay: {type: keywords, any: [salary, payroll, pension]}\n"
        f"rules:\n  - {{name: payroll, when: pay, then: {{route: {SECRET}}}}}\n"
    )
    injected = [
        Hit("pay-0", 99.0, SECRET, text="salary"),
        Hit("it-internal-0", 98.0, "helpdesk", metadata={"access": ["it"]}),
        Hit("hr-internal-1", 97.0, "helpdesk", metadata={"access": "hr,legal"}),
        Hit("g4", 96.0, "kg", metadata={"access": "vault"}),
    ]
    restricted = Source(
        "restricted",
        _build_restricted(),
        access=frozenset({"board"}),
    )
    pipelines: dict[str, Any] = {
        "route/fixed": Pipeline(sources, _FixedRouter(prefer_secret)),
        "route/prototype": Pipeline(sources, PrototypeRouter(sources, encoder), encoder=encoder),
        "route/policy": Pipeline(sources, _FixedRouter({"science": 1.0}), policy=policy),
        "rerank/injecting": Pipeline(
            sources,
            _FixedRouter({SECRET: 0.5, "helpdesk": 0.5}),
            reranker=_InjectingReranker(injected),
            options=RoutingOptions(threshold=0.0),
        ),
        "nested": Pipeline(
            [
                Source(
                    "inner",
                    Pipeline(sources, _FixedRouter(prefer_secret), options=RoutingOptions(threshold=0.0)),
                ),
                restricted,
            ],
            _FixedRouter({"restricted": 0.6, "inner": 0.4}),
            options=RoutingOptions(threshold=0.0),
        ),
        "graph/source": Pipeline(
            [*sources, Source("kg", graph)],
            _FixedRouter({"kg": 0.6, SECRET: 0.2, "helpdesk": 0.2}),
            options=RoutingOptions(threshold=0.0, max_routes=3),
        ),
    }
    for fusion in ("rrf", "minmax", "calibrated"):
        pipelines[f"fusion/{fusion}"] = Pipeline(
            sources,
            _FixedRouter({SECRET: 0.34, "science": 0.33, "helpdesk": 0.33}),
            options=RoutingOptions(threshold=0.0, max_routes=3, fusion=fusion, always=(SECRET,)),
        )
    walks = {
        "default": WalkParams(),
        "static": WalkParams.static(),
        "boost": WalkParams(fact_passage_boost=1.0, passage_prior=0.5),
        "power": WalkParams(damping=0.85),
        "lexical": WalkParams(lexical_edges=50.0, anchor_similarity=0.1),
    }
    for _ in range(rounds):
        for mechanism, pipeline in pipelines.items():
            queries = GRAPH_QUERIES + QUERIES if mechanism.startswith("graph") else QUERIES
            for scopes in SCOPE_SETS:
                for query in queries:
                    result = pipeline.retrieve(query, k=10, scopes=scopes)
                    shown = {"result": result.to_dict(), "hits": _explained(result.hits)}
                    report.count(mechanism, leaks_of(result.hits, scopes, shown, query))
                    if mechanism.startswith("route"):
                        decision = pipeline.decide(query, scopes=scopes)
                        report.count(f"{mechanism}/decide", leaks_of([], scopes, decision.to_dict(), query))
            _control(report, mechanism, pipeline, queries)
        for name, walk in walks.items():
            graph.walk = walk
            for scopes in SCOPE_SETS:
                contexts = [QueryContext.of(q, scopes=scopes) for q in GRAPH_QUERIES]
                for query, hits in zip(GRAPH_QUERIES, graph.search_contexts(contexts, k=5), strict=True):
                    report.count(f"graph/walk-{name}", leaks_of(hits, scopes, _explained(hits), query))
            everything = graph.search_contexts([QueryContext.of(GRAPH_QUERIES[2], scopes=ALL_SCOPES)], k=5)[0]
            report.controls += 1
            if not {"g2", "g4"} <= {h.doc_id for h in everything}:
                report.controls_failed += 1
        graph.walk = WalkParams()
        if progress:
            progress(f"scope probe: {report.probes} probes, {report.leaks} leaks")
    return report


def _build_restricted() -> Any:
    from ragroute.index.build import build_index

    return build_index(_docs("restricted", SECRET_WORDS), "bm25", name="restricted")


def _control(report: ScopeReport, mechanism: str, pipeline: Any, queries: Sequence[str]) -> None:
    """With every scope, the labelled material must be reachable through ``pipeline``."""
    reached = set()
    for query in queries:
        for hit in pipeline.retrieve(query, k=30, scopes=ALL_SCOPES).hits:
            labels = labels_of(hit.metadata.get("access"))
            if labels or hit.source in (SECRET, "restricted") or hit.explain.get("inner_source") == SECRET:
                reached.add(hit.doc_id)
    report.controls += 1
    if not reached:
        report.controls_failed += 1
        report.examples.append(
            f"{mechanism}: control reached nothing labelled (the probe could not see a leak)"
        )

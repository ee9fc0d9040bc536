"""The scope probe: queries built to reach a forbidden corpus (routing, fusion, graph walks,
rerankers, nested pipelines) leak nothing, and the probe does see a leak when there is one."""

from __future__ import annotations

from ragroute.reliability.scope_probe import GRAPH_QUERIES, _explained, _graph, leaks_of, run_scope_probe
from ragroute.reliability.workload import WordHashEncoder


def test_no_probe_leaks_and_every_positive_control_reaches_the_labelled_material():
    report = run_scope_probe()
    assert report.probes >= 500 and report.leaks == 0, report.examples
    assert report.controls >= 10 and report.controls_failed == 0, report.examples
    assert {m.split("/")[0] for m in report.by_mechanism} >= {"route", "fusion", "graph", "rerank", "nested"}


def test_the_probe_sees_a_leak_in_an_unscoped_search():
    graph = _graph(WordHashEncoder())
    hits = graph.search(GRAPH_QUERIES[0], k=5)  # no query context: not scoped
    leaks = leaks_of(hits, (), _explained(hits), GRAPH_QUERIES[0])
    assert any("g2" in leak for leak in leaks)
    assert leaks_of(hits, ("geo", "vault"), _explained(hits), GRAPH_QUERIES[0]) == []

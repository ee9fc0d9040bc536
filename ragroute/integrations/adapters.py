"""What the LlamaIndex and LangChain integrations share (no framework is imported here).

* :class:`DecisionLog`: the decisions of a framework retriever's latest queries, kept once
  per query (nodes and documents carry only a small ``decision_id``), safe across threads;
* :class:`ExternalRetriever`: the base of the adapters that make a framework's retriever a
  ragroute retriever (``search``, ``search_many``), so it can be a
  :class:`~ragroute.route.sources.Source` of a pipeline;
* :func:`framework_of`: which framework an object comes from, read from its classes'
  modules (so nothing is imported to find out).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from ragroute.errors import check_query
from ragroute.types import Decision, Document, Hit

#: scalar metadata types a node or document may carry (nested values stay in ``explain``)
SCALARS = (str, int, float, bool)


def scalar_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``metadata`` whose values are scalars (or ``None``)."""
    return {k: v for k, v in metadata.items() if v is None or isinstance(v, SCALARS)}


class DecisionLog:
    """The decisions of the last ``size`` queries, by id; ``last`` is the latest one recorded."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._decisions: OrderedDict[str, Decision] = OrderedDict()
        self._lock = threading.Lock()
        self.last: Decision | None = None

    def record(self, decision: Decision, decision_id: str = "") -> str:
        decision_id = decision_id or uuid.uuid4().hex[:12]
        with self._lock:
            self._decisions[decision_id] = decision
            self._decisions.move_to_end(decision_id)
            while len(self._decisions) > self.size:
                self._decisions.popitem(last=False)
            self.last = decision
        return decision_id

    def get(self, decision_id: str) -> Decision | None:
        with self._lock:
            return self._decisions.get(decision_id)


def matches(hit: Hit, filters: Mapping[str, Any] | None) -> bool:
    """Whether ``hit`` passes ragroute's metadata ``filters`` (a list/tuple/set value: any of them)."""
    for key, wanted in (filters or {}).items():
        allowed = set(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else {wanted}
        if _field(hit, key) not in allowed:
            return False
    return True


def _field(hit: Hit, key: str) -> Any:
    if key == "modality":
        return hit.modality
    if key == "parent_id":
        return hit.parent_id
    return hit.metadata.get(key)


class ExternalRetriever:
    """A ragroute retriever over another framework's retriever: subclasses implement :meth:`fetch`.

    ``filters`` are applied to the hits the framework returns (ragroute's semantics: equal
    metadata, a list means any of), so a filtered query may return fewer than ``k`` hits;
    filter inside the framework's retriever to get ``k`` matching ones. ``documents``
    (optional) are what training-free routers build a source's prototype from.
    """

    framework = ""

    def __init__(self, name: str, documents: Sequence[Document] = ()) -> None:
        self.name = name
        self._documents = list(documents)

    @property
    def documents(self) -> Sequence[Document]:
        return self._documents

    def fetch(self, query: str, k: int) -> list[Hit]:  # pragma: no cover - abstract
        """Up to ``k`` hits for one query, best first (ranks and source are set afterwards)."""
        raise NotImplementedError

    def fetch_many(self, queries: list[str], k: int) -> list[list[Hit]]:
        """:meth:`fetch` for each query (a framework with a batch call overrides this)."""
        return [self.fetch(query, k) for query in queries]

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        return self.search_many([query], k, filters=filters)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out = []
        for hits in self.fetch_many([check_query(q) for q in queries], k):
            hits = [h for h in hits if matches(h, filters)][:k]
            for rank, hit in enumerate(hits, 1):
                hit.rank = rank
                hit.source = self.name
            out.append(hits)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def framework_of(obj: Any) -> str:
    """``"llamaindex"``, ``"langchain"`` or ``""``: the framework ``obj``'s class comes from."""
    modules = [getattr(cls, "__module__", "") or "" for cls in type(obj).__mro__]
    if any(m.startswith("llama_index.") for m in modules):
        return "llamaindex"
    if any(m.startswith(("langchain_core.", "langchain.", "langchain_community.")) for m in modules):
        return "langchain"
    return ""

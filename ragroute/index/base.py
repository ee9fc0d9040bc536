"""The retriever protocol: one interface for every source ragroute can search."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ragroute.errors import RagrouteError
from ragroute.scopes import scoped_filters
from ragroute.types import Hit


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a text query with ranked :class:`~ragroute.types.Hit` s.

    ``name`` is the source name stamped on every hit. ``filters`` keeps only
    documents whose metadata equals each given value (a list/tuple/set value
    means "any of these").
    """

    name: str

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]: ...

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...


def content_key(source: Any) -> tuple[Any, ...]:
    """What changes whenever the documents of ``source`` (a Source or a retriever) change, for
    keying what was computed from them: their number and, for ragroute's indexes, their store's
    ``version`` (a delete and an add of as many documents keep the number, not the version); for
    a retriever over sources of its own (a pipeline), theirs."""
    retriever = getattr(source, "retriever", source)
    documents = getattr(source, "documents", ())
    inner = getattr(retriever, "sources", None)
    if isinstance(inner, (list, tuple)) and inner:
        return (len(documents), *(content_key(s) for s in inner))
    version = getattr(getattr(retriever, "store", None), "version", None)
    return len(documents), version if isinstance(version, int) else None


def metadata_keys_of(retriever: Any, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
    """The metadata keys the documents of ``retriever`` carry (with ``scopes``: the documents a
    caller holding them may read), when it can tell: ragroute's indexes (their document store's
    keys, computed once per content), a :class:`~ragroute.route.sources.Source` over one, a
    pipeline whose every source can tell (the union). ``None`` when it cannot: an empty index, a
    framework's retriever, any other retriever (its documents, if it lists any, need not be all it
    searches), so a filter is never refused for a key such a source may hold."""
    keys = getattr(retriever, "metadata_keys", None)
    return keys(scopes) if callable(keys) else None


def carried_keys(retrievers: Iterable[Any], scopes: Sequence[str] | None = None) -> frozenset[str] | None:
    """The metadata keys the documents of ``retrievers`` carry together (:func:`metadata_keys_of`),
    or ``None`` when there are none or one of them cannot tell (it may hold any key)."""
    union: set[str] = set()
    found = False
    for retriever in retrievers:
        keys = metadata_keys_of(retriever, scopes)
        if keys is None:
            return None
        union.update(keys)
        found = True
    return frozenset(union) if found else None


def search_contexts(retriever: Any, contexts: Sequence[Any], k: int) -> list[list[Hit]]:
    """Top ``k`` hits of any retriever for each query context.

    A retriever with its own ``search_contexts`` (ragroute's indexes and pipelines)
    reuses the contexts' cached vectors; any other is asked with the texts, one
    call per distinct filter set (in the order the contexts came).
    """
    contexts = list(contexts)
    if hasattr(retriever, "search_contexts"):
        return retriever.search_contexts(contexts, k)
    return by_filter_groups(
        contexts, lambda group, filters: retriever.search_many([c.text for c in group], k, filters=filters)
    )


def filter_groups(
    contexts: Sequence[Any], *, scoped: bool = False, by_caller: bool = False
) -> list[tuple[list[int], list[Any], Mapping[str, Any] | None]]:
    """The contexts grouped by their filters (and, ``scoped``, their scopes; ``by_caller``, who asks:
    their ``caller``): for each distinct set, its positions, its contexts and the filters one search
    of the group takes, in first-seen order. A group's contexts share one caller with ``by_caller``
    (``group[0].caller`` is every one's), for a retriever that is handed the caller with the search."""
    groups: dict[str, list[int]] = {}
    for i, context in enumerate(contexts):
        # ordered by the keys' text: a key that is not text (metadata may hold one) beside one that is
        # made sorting the items a bare TypeError, where a search by query text filtered on it
        key = repr(sorted((context.filters or {}).items(), key=lambda item: repr(item[0])))
        if scoped:
            key += repr(tuple(getattr(context, "scopes", ())))
        if by_caller:
            key += repr(getattr(context, "caller", ""))
        groups.setdefault(key, []).append(i)
    out = []
    for positions in groups.values():
        group = [contexts[i] for i in positions]
        filters = group[0].filters or None
        if scoped:
            filters = scoped_filters(filters, getattr(group[0], "scopes", ()))
        out.append((positions, group, filters))
    return out


def by_filter_groups(
    contexts: Sequence[Any],
    search: Callable[[list[Any], Mapping[str, Any] | None], list[list[Hit]]],
    *,
    scoped: bool = False,
    by_caller: bool = False,
) -> list[list[Hit]]:
    """``search(group, filters)`` once per distinct filter set; results back in the contexts' order.

    ``scoped``: the retriever understands scope filters (:class:`ragroute.scopes.Visible`), so
    contexts are grouped by their scopes too and each group's filters carry its scope.
    ``by_caller``: the retriever is handed who asks (``search`` reads ``group[0].caller``), so
    contexts of different callers are searched apart (one caller's group, one caller's search).
    """
    out: list[list[Hit]] = [[] for _ in contexts]
    for positions, group, filters in filter_groups(contexts, scoped=scoped, by_caller=by_caller):
        results = search(group, filters)
        if len(results) != len(group):  # zip would shift hits onto other queries
            raise RagrouteError(f"a retriever returned {len(results)} result lists for {len(group)} queries")
        for i, hits in zip(positions, results):
            out[i] = hits
    return out

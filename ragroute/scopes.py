"""Caller scopes: which sources and documents a caller may read (see docs/config.md, "Caller scopes").

* **Access labels.** A source carries labels from its routing-config key ``access:`` (a label or a
  list of labels, :attr:`Source.access <ragroute.route.sources.Source.access>`); a document from
  its metadata key ``access`` (:data:`ACCESS_KEY`: a string, a list of strings, or one string of
  comma-separated labels, for stores whose metadata must be flat), for stores that mix corpora
  (a graph built over several corpora, a merged index, an external vector store).
* **Caller scopes.** :attr:`QueryContext.scopes <ragroute.context.QueryContext.scopes>`: the
  labels the caller holds.
* **Visibility.** Something without labels is public: every caller sees it. Something with
  labels is visible when the caller's scopes share at least one of them. A caller without scopes
  (the default) sees only public sources and documents: scoping fails closed.

A search with a query context is scoped: the pipeline hides out-of-scope sources from routing and
checks every hit again before fusion, before the reranker and before returning; ragroute's indexes
and graphs take the scope as a filter (:class:`Visible`, under the filter key :data:`SCOPE_FILTER`)
pushed down into the search, the graph walk and its seed linking. An index searched directly
(``index.search(text)``, no context) is not scoped: whoever holds the index object reads it all.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ragroute.errors import InvalidArgumentError, RagrouteError

#: the document metadata key (and routing-config source key) holding access labels
ACCESS_KEY = "access"
#: the filter key under which a :class:`Visible` filter travels with the other metadata filters
SCOPE_FILTER = "@scope"
#: what a trace shows in place of something the caller's scope hides
REDACTED = "(hidden by scope)"


def label_form(label: str) -> str:
    """A scope or access label in the one spelling labels are compared in: surrounding whitespace
    dropped, Unicode in NFC form (until session 48 a decomposed ``"José"`` on a document and the
    composed one a caller held were two labels: the document was hidden from its own readers)."""
    label = label.strip()
    return label if label.isascii() else unicodedata.normalize("NFC", label)


def labels_of(value: Any) -> frozenset[str]:
    """The access labels a metadata value holds: ``None`` or empty is public (no labels); a string
    is one label or several separated by commas; a list, tuple or set holds labels. Anything else
    counts as the one label its text is (so an odd value never makes a document public)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(label_form(part) for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(label for item in value for label in labels_of(item))
    return frozenset({str(value)})


def is_public(metadata: Mapping[str, Any] | None, key: str = ACCESS_KEY) -> bool:
    """Whether a document with this metadata carries no access labels under ``key``
    (:func:`labels_of`: ``access: 0`` is the label ``"0"``, not public)."""
    return not labels_of((metadata or {}).get(key))


#: labels that read as "everyone" but are labels like any other: what carries one is seen only by
#: callers holding that scope (public things carry no access labels at all)
OPEN_SOUNDING = frozenset({"public", "everyone", "all", "anyone", "*"})


def open_sounding(labels: Iterable[str]) -> list[str]:
    """The labels of ``labels`` that read as "everyone" (:data:`OPEN_SOUNDING`), sorted."""
    return sorted(label for label in labels if label.strip().lower() in OPEN_SOUNDING)


def open_sounding_note(labels: Iterable[str], what: str) -> str | None:
    """The warning for ``what`` (e.g. "3 documents (T1, T4)") carrying an :func:`open_sounding`
    label, or None."""
    found = open_sounding(labels)
    if not found:
        return None
    return (
        f"{what}: the access label {', '.join(map(repr, found))} is a label like any other, seen "
        f"only by callers holding that scope; leave access empty for what everyone may read"
    )


def visible(labels: Iterable[str], scopes: Iterable[str]) -> bool:
    """Whether something with access ``labels`` is visible to a caller holding ``scopes``."""
    labels = frozenset(labels)
    return not labels or not labels.isdisjoint(scopes)


def readable(hits: Iterable[Any], scopes: Iterable[str]) -> list[Any]:
    """The ``hits`` whose documents a caller holding ``scopes`` may read (their ``access`` labels
    public or meeting the scopes): what every reader of a source's scores keeps, since a retriever
    that does not filter by scope (any object with ``search_many``) returns the others too."""
    held = frozenset(scopes)
    return [hit for hit in hits if visible(labels_of((hit.metadata or {}).get(ACCESS_KEY)), held)]


def caller_id(caller: Any) -> str:
    """``caller`` (who asks, for exposure budgets) in the one spelling the ledger counts it under:
    surrounding whitespace dropped (as scope labels are read) and Unicode in NFC form (until session
    44 ``"alice"``, ``"alice "`` and a decomposed ``"José"`` were three callers, each with a budget
    of its own). ``""`` is the shared anonymous caller; anything but a string, or a name of only
    whitespace, is :class:`InvalidArgumentError`."""
    if not isinstance(caller, str):
        raise InvalidArgumentError(f"caller must be a string naming who asks, got {type(caller).__name__}")
    name = label_form(caller)
    if caller and not name:
        raise InvalidArgumentError(
            f"caller {caller!r} is only whitespace: name who asks, or pass '' for the anonymous caller"
        )
    return name


def caller_scopes(value: Any, where: str = "scopes") -> tuple[str, ...]:
    """A caller's scopes as a sorted tuple of labels: ``None`` gives none, a string is one label
    (not a sequence of characters), any other iterable holds labels; labels are non-empty strings
    without commas; anything else is :class:`InvalidArgumentError`."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise InvalidArgumentError(
            f"{where}: expected a label or a list of labels, got {type(value).__name__}"
        ) from None
    for item in items:
        if not isinstance(item, str) or not item.strip() or "," in item:
            raise InvalidArgumentError(
                f"{where}: {item!r} is not a scope label (a non-empty string without commas)"
            )
    return tuple(sorted({label_form(item) for item in items}))


def access_labels(value: Any, where: str) -> frozenset[str]:
    """A source's ``access:`` setting (a label or a list of labels) as labels; refuses anything else."""
    if value is None:
        return frozenset()
    if isinstance(value, (list, tuple, set, frozenset)) and not value:  # it made the source public
        raise RagrouteError(
            f"{where}: access: [] lists no label, which would make the source public: name the "
            "labels that may read it, or leave access out for a public source"
        )
    if isinstance(value, str) or (
        isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value)
    ):
        return frozenset(caller_scopes(value, f"{where}: access"))
    raise RagrouteError(f"{where}: access: expected a label or a list of labels, not {type(value).__name__}")


@dataclass(frozen=True)
class Visible:
    """A metadata filter value: documents whose ``key`` labels are public or meet ``scopes``.

    It travels under :data:`SCOPE_FILTER` beside the other filters;
    :meth:`DocumentStore.filter_mask <ragroute.index.docstore.DocumentStore.filter_mask>` and the
    adapters' post-filter understand it.
    """

    scopes: frozenset[str] = frozenset()
    key: str = ACCESS_KEY

    def __call__(self, value: Any) -> bool:
        return visible(labels_of(value), self.scopes)


def scoped_filters(filters: Mapping[str, Any] | None, scopes: Iterable[str]) -> dict[str, Any]:
    """``filters`` plus the scope filter of a caller holding ``scopes``."""
    return {**(filters or {}), SCOPE_FILTER: Visible(frozenset(scopes))}


def scope_of(filters: Mapping[str, Any] | None) -> Visible | None:
    """The scope filter among ``filters`` (``None``: the search is not scoped)."""
    found = (filters or {}).get(SCOPE_FILTER)
    return found if isinstance(found, Visible) else None


def redact(value: Any, hidden: frozenset[str]) -> Any:
    """``value`` (a trace detail or signals) with every mention of a ``hidden`` name removed: a
    mapping holding a hidden name as a value (e.g. a router's ``best``) becomes
    ``{"redacted": REDACTED}`` (the numbers beside the name would tell about it); a key naming
    one is dropped; list items naming one are dropped."""
    if not hidden:
        return value
    if isinstance(value, Mapping):
        if any(isinstance(v, str) and v in hidden for v in value.values()):
            return {"redacted": REDACTED}
        return {k: redact(v, hidden) for k, v in value.items() if k not in hidden}
    if isinstance(value, (list, tuple)):
        return [redact(v, hidden) for v in value if not (isinstance(v, str) and v in hidden)]
    if isinstance(value, str) and value in hidden:
        return REDACTED
    return value

"""Stage 1 of skill routing: BM25 and dense scores over a catalogue's fields, fused with weights
that adapt to the catalogue.

:class:`SkillIndex` holds, for one :class:`~ragroute.skills.records.Catalogue`:

* a BM25 scorer over each skill's fields with per-field weights (``bm25_fields``: how many times
  the name, the description and the body count; identifiers such as ``getWeatherForecast`` or
  ``get_weather`` also appear split into words);
* dense embeddings of one or more views of each skill (``dense_views``: ``head`` = name and
  description, ``full`` = name | description | body, ``body``), whose cosines are averaged with
  weights;
* the fusion: every query scores **every** skill with both methods, each score vector is
  standardised over the catalogue (z-scores), and ``hybrid = (1 - w) * z(bm25) + w * z(dense)``;
  skills tied on it are ranked by their dense score (:meth:`SkillIndex.top`), then catalogue order.

The dense weight ``w`` adapts to the catalogue without labels (``fusion="adaptive"``, the
default): pseudo-queries are cut from the catalogue itself (each sampled skill's description,
searched against names and bodies with every literal copy of a description removed from its own
body, so neither method can match it verbatim), both methods score them, and ``w`` is the grid value with
the best MRR@10 on them on the side of 0.5 of the method that alone finds them better (the fused
curve is flat near its top, the single methods' difference is not; 0 or 1 only when it wins
outright; a curve flat over the whole grid keeps ``dense_weight``), shrunk towards 0.5 by
``shrink``. Queries of a benchmark are never
seen. ``fusion="fixed"`` takes ``dense_weight`` as given; ``fusion="rrf"`` is reciprocal rank
fusion (k=60) of the two lists, the naive baseline.

Near-duplicate skills are found once at build time: pairs whose ``full`` embeddings have a cosine
of at least ``duplicate_threshold`` are joined into groups (the router collapses or diversifies
them).

Persisted through the artifact store (family ``skills``, kind ``skill-index``): the catalogue as
SKILLS JSONL, the BM25 scorer's parts, one ``.npy`` per dense view (read with
``allow_pickle=False``), and the fusion weight, its tuning report and the duplicate groups in the
manifest. No pickle.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.draws import drawn
from ragroute.encode.base import row_products
from ragroute.errors import InvalidArgumentError, RagrouteError, check_query, check_setting, lone_surrogate
from ragroute.identifiers import name_with_words
from ragroute.skills.records import Catalogue, Skill
from ragroute.store.arrays import numpy_read

FAMILY = "skills"
KIND = "skill-index"
CATALOGUE_FILE = "skills.jsonl"
FUSIONS = ("adaptive", "fixed", "rrf")
METHODS = ("hybrid", "bm25", "dense")
VIEWS = ("head", "full", "body")
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
RRF_K = 60
QUERY_CACHE = 20_000  # query embeddings kept per index (384-d: about 30 MB when full)
SCOPE_CACHE = 32  # the visible views of distinct caller scopes kept per index


@dataclass(frozen=True)
class ScopedView:
    """What one set of caller scopes may read of a catalogue (:meth:`SkillIndex.scoped_view`):
    ``columns`` the visible skills' positions in catalogue order, and the near-duplicate groups
    among them (a group's hidden members left out, and the visible ones linked again only through
    visible members: a hidden skill similar to two others never joins them into one group)."""

    columns: np.ndarray
    duplicates: list[list[str]]
    group_of: dict[str, int]


@dataclass
class SkillIndexParams:
    """How a :class:`SkillIndex` is built (recorded in its manifest)."""

    bm25_fields: dict[str, int] = field(default_factory=lambda: {"name": 1, "description": 1, "body": 1})
    dense_views: dict[str, float] = field(default_factory=lambda: {"full": 1.0})
    fusion: str = "adaptive"
    dense_weight: float = 0.5
    shrink: float = 0.0
    pseudo_queries: int = 300
    tuning_pool: int = 2000
    seed: int = 0
    duplicate_threshold: float = 0.97
    bm25_stopwords: str = "nltk"
    #: BM25 reads CJK runs as character pairs (:class:`~ragroute.index.bm25_tokenize.TokenizerConfig`);
    #: an index recorded before the option counted whole runs, and is read so
    bm25_cjk_bigrams: bool = True
    #: BM25 reads text in NFC form (:class:`~ragroute.index.bm25_tokenize.TokenizerConfig`); an
    #: index recorded before the option split decomposed accents (``Ko`` + mark + ``ln``), and is
    #: read so
    bm25_nfc: bool = True
    #: BM25 keeps combining marks in their word (:class:`~ragroute.index.bm25_tokenize.TokenizerConfig`);
    #: an index recorded before the option (session 37) split Indic words at their vowel signs, and
    #: is read so
    bm25_marks: bool = True
    #: BM25 reads each word in its NFKC form, case-folded, without invisible format characters
    #: (:class:`~ragroute.index.bm25_tokenize.TokenizerConfig`); an index recorded before the option
    #: (until session 53) read full-width ``ＰＤＦ`` apart from ``PDF``, and is read so
    bm25_nfkc: bool = True

    def __post_init__(self) -> None:
        from ragroute.index.bm25_tokenize import STOPWORD_SETS

        if self.bm25_stopwords not in STOPWORD_SETS:
            raise RagrouteError(
                f"unknown bm25_stopwords {self.bm25_stopwords!r}: choose one of {', '.join(STOPWORD_SETS)}"
            )
        if self.fusion not in FUSIONS:
            raise RagrouteError(f"unknown skill fusion {self.fusion!r}: choose one of {', '.join(FUSIONS)}")
        # every number checked (until session 49 a negative field weight was clamped to 0, 2.5 read
        # as 2, a shrink or duplicate threshold outside [0, 1] and a negative pool taken as given)
        where = "skill index settings"
        for key in ("dense_weight", "shrink", "duplicate_threshold"):
            check_setting(getattr(self, key), "number", where, key, minimum=0, maximum=1)
        for key in ("pseudo_queries", "tuning_pool"):
            check_setting(getattr(self, key), "integer", where, key, minimum=0)
        check_setting(self.bm25_fields, "mapping", where, "bm25_fields")
        check_setting(self.dense_views, "mapping", where, "dense_views")
        for name, count in self.bm25_fields.items():
            check_setting(count, "integer", where, f"bm25_fields: {name}", minimum=0)
        for name, share in self.dense_views.items():
            check_setting(share, "number", where, f"dense_views: {name}", minimum=0)
        bad = sorted(set(self.bm25_fields) - {"name", "description", "body"})
        if bad or not any(int(w) > 0 for w in self.bm25_fields.values()):
            raise RagrouteError(
                "bm25_fields must give non-negative integer weights to name, description and body "
                f"(at least one positive); got {self.bm25_fields}"
            )
        bad = sorted(set(self.dense_views) - set(VIEWS))
        if bad or not any(float(w) > 0 for w in self.dense_views.values()):
            raise RagrouteError(f"dense_views must weight some of {', '.join(VIEWS)}; got {self.dense_views}")
        if not 0.0 <= float(self.dense_weight) <= 1.0:
            raise RagrouteError(f"dense_weight must be in [0, 1], got {self.dense_weight}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkillIndexParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def tokenizer(self) -> Any:
        """The :class:`~ragroute.index.bm25_tokenize.TokenizerConfig` of the BM25 side."""
        from ragroute.index.bm25_tokenize import TokenizerConfig

        return TokenizerConfig(
            stopword_set=self.bm25_stopwords,
            cjk_bigrams=self.bm25_cjk_bigrams,
            nfc=self.bm25_nfc,
            marks=self.bm25_marks,
            nfkc=self.bm25_nfkc,
        )


def bm25_text(skill: Skill, weights: Mapping[str, int]) -> str:
    """The text BM25 indexes for a skill: each field repeated ``weights[field]`` times (identifiers
    in the name also split into words)."""
    parts = {"name": name_with_words(skill.name), "description": skill.description, "body": skill.body}
    return "\n".join(text for f, text in parts.items() for _ in range(max(int(weights.get(f, 0)), 0)) if text)


def view_text(skill: Skill, view: str) -> str:
    """The text a dense view embeds: ``head`` (name | description), ``full`` (name | description |
    body, :meth:`Skill.field_text` ``"text"``) or ``body``; never empty (falls back to the name).

    Identifiers are not split here: measured on metatool, ``ABCmouse (AB Cmouse)`` cost the dense
    method 2-4 points; BM25 gets the split words instead."""
    if view == "head":
        text = " | ".join(p for p in (skill.name, skill.description) if p)
    elif view == "body":
        text = skill.body
    else:
        text = skill.field_text("text")
    return text or skill.name or skill.id


def without_negative_idf(scorer: Any, tokens: list[str]) -> list[str]:
    """``tokens`` without the terms whose BM25 idf is negative, so they count 0 instead.

    BM25Okapi floors the idf of a term in more than half of the skills at ``epsilon *
    average_idf``, which is negative when the average idf is (a catalogue of a few skills: with 2
    every idf is 0 or below). Stage 1 ranks every skill by its full score row, so such a term
    ranked the skills holding it *below* those without it: until session 49 "fill pdf" over two
    PDF skills and one CSV skill put the CSV skill first. With a positive average idf (the measured
    catalogues) no idf is negative and nothing changes."""
    if scorer.average_idf >= 0:
        return tokens
    vocab, idf = scorer.vocab, scorer.idf
    return [t for t in tokens if t not in vocab or idf[vocab[t]] >= 0]


def zscore(scores: np.ndarray) -> np.ndarray:
    """Each row standardised over the catalogue (zero mean, unit variance; constant rows give 0)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def rrf_scores(*lists: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """Reciprocal rank fusion of full score rows (rank 1 = best; ties by position)."""
    total: np.ndarray | float = 0.0
    for scores in lists:
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        rows = np.arange(scores.shape[0])[:, None]
        ranks[rows, order] = np.arange(1, scores.shape[1] + 1)[None, :]
        total = total + 1.0 / (k + ranks)
    return np.asarray(total)


class SkillIndex:
    """BM25 + dense scores over a skill catalogue, fused with a catalogue-adapted weight."""

    def __init__(
        self,
        catalogue: Catalogue,
        encoder: Any,
        params: SkillIndexParams,
        scorer: Any,
        vectors: dict[str, np.ndarray],
        *,
        dense_weight: float,
        tuning: dict[str, Any] | None = None,
        duplicates: list[list[str]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.encoder = encoder
        self.params = params
        self.scorer = scorer
        self.vectors = vectors
        self.dense_weight = float(dense_weight)
        self.tuning = dict(tuning or {})
        self.duplicates = [list(g) for g in duplicates or []]
        self.group_of: dict[str, int] = {sid: i for i, g in enumerate(self.duplicates) for sid in g}
        self.manifest: Any = None
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # threads routing at once share the cache
        self._labels: list[frozenset[str]] | None = None  # each skill's access labels, read once
        self._scoped: OrderedDict[frozenset[str], ScopedView | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.catalogue)

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Each skill's position in the catalogue (its column in the score rows), by id."""
        return {sid: i for i, sid in enumerate(self.catalogue.ids)}

    def __repr__(self) -> str:
        return (
            f"SkillIndex({len(self)} skills, fusion={self.params.fusion}, "
            f"dense_weight={self.dense_weight:.2f}, "
            f"duplicate_groups={len(self.duplicates)})"
        )

    @property
    def weight_origin(self) -> str:
        """Where the dense weight came from, in words: ``adaptive, from N pseudo-queries``, the
        reason it stayed fixed (a catalogue too small to tune on, or a tuning curve flat over the
        whole grid), or the fusion setting."""
        fusion = self.params.fusion
        if fusion == "adaptive" and "note" in self.tuning and "best_grid_weight" in self.tuning:
            # a flat curve kept the configured weight: until session 49 this said "adaptive"
            return f"fixed: every weight ranks the {self.tuning.get('pseudo_queries')} pseudo-queries alike"
        if fusion == "adaptive" and "best_grid_weight" in self.tuning:
            return f"adaptive, from {self.tuning.get('pseudo_queries')} pseudo-queries"
        if fusion == "adaptive":
            return str(self.tuning.get("note", "fixed: not tuned"))
        return fusion

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        catalogue: Catalogue | Sequence[Skill],
        encoder: Any,
        params: SkillIndexParams | None = None,
        *,
        show_progress: bool | None = None,
    ) -> SkillIndex:
        """Index a catalogue: BM25 over weighted fields, dense views, adaptive weight, duplicates.

        ``show_progress``: bars while encoding, as :func:`ragroute.progress.progress_enabled` rules
        (``None``: on a terminal, for long passes). Until session 55 it was ``False``, so ``ragroute
        skills build`` encoded thousands of skills on a terminal without a bar."""
        from ragroute.index.bm25_scoring import BM25Scorer
        from ragroute.index.bm25_tokenize import tokenize_many

        if not isinstance(catalogue, Catalogue):
            catalogue = Catalogue(catalogue)
        if len(catalogue) == 0:
            raise RagrouteError("the catalogue holds no skills: nothing to index")
        if encoder is None:
            raise RagrouteError("a skill index needs an encoder (see ragroute.encode.load_encoder)")
        params = params or SkillIndexParams()
        skills = list(catalogue)
        scorer = BM25Scorer.fit(
            tokenize_many([bm25_text(s, params.bm25_fields) for s in skills], params.tokenizer)
        )
        views = {v for v, w in params.dense_views.items() if float(w) > 0} | {"full"}
        vectors = {
            view: np.ascontiguousarray(
                encoder.encode_documents([view_text(s, view) for s in skills], show_progress=show_progress),
                dtype=np.float32,
            )
            for view in sorted(views)
        }
        index = cls(catalogue, encoder, params, scorer, vectors, dense_weight=params.dense_weight)
        if params.fusion == "adaptive":
            index.dense_weight, index.tuning = tune_dense_weight(index, show_progress=show_progress)
        index.duplicates = duplicate_groups(catalogue.ids, vectors["full"], params.duplicate_threshold)
        index.group_of = {sid: i for i, g in enumerate(index.duplicates) for sid in g}
        return index

    # ------------------------------------------------------------------ caller scopes

    @property
    def labelled(self) -> bool:
        """Whether any skill carries access labels (metadata ``access``; read once)."""
        return any(self._skill_labels())

    def _skill_labels(self) -> list[frozenset[str]]:
        if self._labels is None:
            from ragroute.scopes import ACCESS_KEY, labels_of

            self._labels = [labels_of((s.metadata or {}).get(ACCESS_KEY)) for s in self.catalogue]
        return self._labels

    def scoped_view(self, scopes: Sequence[str]) -> ScopedView | None:
        """The skills a caller holding ``scopes`` may read (:class:`ScopedView`), or ``None`` when it
        may read every skill (an unlabelled catalogue: always). The last :data:`SCOPE_CACHE`
        distinct scope sets are kept."""
        key = frozenset(scopes)
        with self._cache_lock:
            if key in self._scoped:
                self._scoped.move_to_end(key)
                return self._scoped[key]
        from ragroute.scopes import visible

        labels = self._skill_labels()
        mask = np.fromiter((visible(found, key) for found in labels), dtype=bool, count=len(labels))
        view = None
        if not mask.all():
            columns = np.flatnonzero(mask)
            duplicates = self._visible_groups({self.catalogue[int(i)].id for i in columns})
            group_of = {sid: i for i, g in enumerate(duplicates) for sid in g}
            view = ScopedView(columns, duplicates, group_of)
        with self._cache_lock:
            self._scoped[key] = view
            while len(self._scoped) > SCOPE_CACHE:
                self._scoped.popitem(last=False)
        return view

    def _visible_groups(self, shown: set[str]) -> list[list[str]]:
        """The duplicate groups among the skills ``shown``: a group without hidden members as it
        is; one with them linked again among its visible members alone (two skills linked only
        through a hidden one are not duplicates of each other)."""
        out: list[list[str]] = []
        position = self.positions
        for group in self.duplicates:
            members = [sid for sid in group if sid in shown]
            if len(members) == len(group):
                out.append(list(group))
            elif len(members) > 1:
                rows = self.vectors["full"][[position[sid] for sid in members]]
                out.extend(duplicate_groups(members, rows, self.params.duplicate_threshold))
        return out

    # ------------------------------------------------------------------ scoring

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """Query embeddings; the last :data:`QUERY_CACHE` distinct queries are kept, so routers
        sharing this index (e.g. the rows of a benchmark) encode a query once."""
        queries = list(queries)
        distinct = list(dict.fromkeys(queries))
        with self._cache_lock:  # another thread may evict an entry between a lookup and its use
            known = {q: self._query_cache[q] for q in distinct if q in self._query_cache}
        missing = [q for q in distinct if q not in known]
        if missing:  # encoded outside the lock: threads encode their own queries at once
            fresh = np.asarray(self.encoder.encode_queries(missing, show_progress=False), dtype=np.float32)
            known.update(zip(missing, fresh))
        with self._cache_lock:
            for text in distinct:
                self._query_cache[text] = known[text]
                self._query_cache.move_to_end(text)
            while len(self._query_cache) > QUERY_CACHE:
                self._query_cache.popitem(last=False)
        return np.stack([known[q] for q in queries])

    def clear_query_cache(self) -> None:
        """Forget cached query embeddings (a latency measurement must encode every query)."""
        with self._cache_lock:
            self._query_cache.clear()

    def bm25_scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every skill for each query, shape (queries, skills)."""
        from ragroute.index.bm25_tokenize import tokenize_many

        tokens = tokenize_many(list(queries), self.params.tokenizer)
        scorer = self.scorer
        if not tokens:
            return np.zeros((0, len(self)))
        return np.stack([scorer.get_scores(without_negative_idf(scorer, t)) for t in tokens])

    def dense_scores(self, vectors: np.ndarray) -> np.ndarray:
        """Weighted mean cosine of each query vector with the skill views, shape (queries, skills)."""
        weights = {v: float(w) for v, w in self.params.dense_views.items() if float(w) > 0}
        total = sum(weights.values())
        out = np.zeros((len(vectors), len(self)), dtype=np.float64)
        for view, weight in weights.items():
            out += (weight / total) * row_products(vectors, self.vectors[view])
        return out

    def score(
        self, queries: Sequence[str], method: str = "hybrid", *, columns: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Full score rows for ``queries``: ``bm25``, ``dense`` (raw), their z-scores and ``fused``
        (what ``method`` ranks by). ``columns``: only these skills (positions, e.g. a caller's
        :meth:`scoped_view`), standardised and fused among themselves (the rows' columns are then
        theirs, in that order); BM25's statistics (idf, mean length) stay the whole catalogue's.

        The columns are copied in row order (``[:, columns]`` alone gives a column-major array, whose
        row means and deviations numpy sums in another order than a single row's): until session 50 a
        scoped batch's z-scores, fused scores and ``p_applies`` differed in their last bits from the
        same tasks routed one at a time."""
        if method not in METHODS:
            raise RagrouteError(f"unknown stage-1 method {method!r}: choose one of {', '.join(METHODS)}")
        queries = [check_query(q) for q in queries]
        out: dict[str, np.ndarray] = {}
        if method in ("hybrid", "bm25"):
            out["bm25"] = self.bm25_scores(queries)
            if columns is not None:
                out["bm25"] = np.ascontiguousarray(out["bm25"][:, columns])
            out["bm25_z"] = zscore(out["bm25"])
        if method in ("hybrid", "dense"):
            out["dense"] = self.dense_scores(self.query_vectors(queries))
            if columns is not None:
                out["dense"] = np.ascontiguousarray(out["dense"][:, columns])
            out["dense_z"] = zscore(out["dense"])
        if method == "bm25":
            out["fused"] = out["bm25"]
        elif method == "dense":
            out["fused"] = out["dense"]
        elif self.params.fusion == "rrf":
            out["fused"] = rrf_scores(out["bm25"], out["dense"])
        else:
            w = self.dense_weight
            out["fused"] = (1.0 - w) * out["bm25_z"] + w * out["dense_z"]
        return out

    def top(self, fused: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
        """Positions of the ``k`` best skills of one fused row, best first. Skills with the same
        fused score go by ``tiebreak`` (the router gives the dense cosines: a task sharing no word
        with any skill under a dense weight of 0 ties every skill at 0), then by catalogue order."""
        k = min(max(int(k), 1), len(fused))
        if k < len(fused):
            # argpartition picks an arbitrary subset of the scores tied at the k-th: take those
            # above it, then the tied ones in tie-break order, so top(k) is top(n)[:k]
            kth = fused[np.argpartition(-fused, k - 1)[k - 1]]
            above = np.flatnonzero(fused > kth)
            tied = np.flatnonzero(fused == kth)
            if tiebreak is not None:
                tied = tied[np.lexsort((tied, -tiebreak[tied]))]
            part = np.concatenate([above, tied[: k - len(above)]])
        else:
            part = np.arange(len(fused))
        if tiebreak is None:
            return part[np.lexsort((part, -fused[part]))]
        return part[np.lexsort((part, -tiebreak[part], -fused[part]))]

    # ------------------------------------------------------------------ persistence

    def save(self, target: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Any:
        """Publish this index (and ``extra`` manifest parameters, e.g. router settings) at ``target``."""
        from ragroute.store import write_artifact

        params = {
            "index": asdict(self.params),
            "dense_weight": self.dense_weight,
            "tuning": self.tuning,
            "duplicates": self.duplicates,
            "bm25_stats": self.scorer.statistics(),
            "skills": len(self),
            "catalogue": {
                "source": str(self.catalogue.source) if self.catalogue.source else None,
                "kind": self.catalogue.kind,
                "warnings": len(self.catalogue.warnings),
            },
            **dict(extra or {}),
        }
        encoder = self.encoder.describe() if hasattr(self.encoder, "describe") else None
        target = Path(target)
        with write_artifact(
            target, FAMILY, KIND, name=target.name, params=params, encoder=encoder
        ) as pending:
            folder = Path(pending.path)
            with open(folder / CATALOGUE_FILE, "w", encoding="utf-8") as handle:
                for skill in self.catalogue:
                    try:
                        handle.write(json.dumps(skill.to_record(), ensure_ascii=False) + "\n")
                    except UnicodeEncodeError:  # the bare UnicodeEncodeError until session 44
                        raise InvalidArgumentError(
                            f"skill {skill.id!r} is not valid Unicode "
                            f"({lone_surrogate(skill.to_record())}), which cannot be saved"
                        ) from None
            self.scorer.write_parts(folder)
            for view, matrix in self.vectors.items():
                np.save(folder / f"dense_{view}.npy", matrix, allow_pickle=False)
            manifest = pending.manifest
        self.manifest = manifest
        return manifest

    @classmethod
    def load(
        cls, target: str | os.PathLike[str], *, encoder: Any = None, backend: str = "auto"
    ) -> tuple[SkillIndex, dict[str, Any]]:
        """``(index, manifest params)`` of a saved index; the encoder recorded at build time is
        loaded unless one is given (a different model is refused)."""
        from ragroute.index.bm25_scoring import BM25Scorer
        from ragroute.index.dense import check_encoder
        from ragroute.loaders.jsonl import read_jsonl
        from ragroute.store import artifact_exists, read_artifact
        from ragroute.store.artifact import family_with_article

        target = Path(target)
        if not artifact_exists(target):
            raise RagrouteError(f"{target}: no skill index here (build one with `ragroute skills build`)")

        def read(snapshot: Any) -> tuple[Catalogue, BM25Scorer, dict[str, np.ndarray], Any, dict[str, Any]]:
            manifest = snapshot.manifest
            if manifest.family != FAMILY:
                held = family_with_article(manifest.family)
                raise RagrouteError(f"{target} holds {held}, not a skill index")
            folder = Path(snapshot.path)
            params = dict(manifest.params)
            # the exact inverse of what save wrote (Skill.to_record): until session 44 the file was
            # read as a user's SKILLS file, warnings silenced, so a skill with a blank id was dropped
            # (the catalogue then one skill short of the index's rows) and names lost their spaces
            catalogue = Catalogue(
                [Skill.from_record(row) for _, row in read_jsonl(folder / CATALOGUE_FILE, on_error="raise")]
            )
            source = (params.get("catalogue") or {}).get("source")
            catalogue = Catalogue(
                catalogue.skills,
                source=source,
                kind=(params.get("catalogue") or {}).get("kind", ""),
            )
            scorer = BM25Scorer.read_parts(folder, params.get("bm25_stats"))
            # the files the manifest lists (checked), never a folder glob: until session 41 any
            # dense_*.npy in the build folder was loaded, unchecked, as one more view
            vectors = {
                name.removesuffix(".npy").removeprefix("dense_"): numpy_read(
                    functools.partial(np.load, snapshot.file(name), allow_pickle=False)
                )
                for name in sorted(manifest.files)
                if name.startswith("dense_") and name.endswith(".npy") and "/" not in name
            }
            _check_rows(target, len(catalogue), scorer, vectors)
            return catalogue, scorer, vectors, manifest, params

        catalogue, scorer, vectors, manifest, params = read_artifact(target, read, family=FAMILY)
        recorded = manifest.encoder or {}
        dim: int = next(iter(vectors.values())).shape[1]
        if encoder is None:
            from ragroute.encode import load_encoder

            encoder = load_encoder(recorded.get("model_id", ""), backend=backend)
        check_encoder(recorded, encoder.model_id, int(getattr(encoder, "dim", dim)), str(target), encoder)
        index = cls(
            catalogue,
            encoder,
            # an index recorded before bm25_stopwords (bm25_cjk_bigrams, bm25_nfc, bm25_marks, bm25_nfkc)
            # existed counted its BM25 statistics with Lucene's stop set (whole CJK runs, text as stored,
            # words split at combining marks, full-width letters as written): its queries are tokenized
            # the same way
            SkillIndexParams.from_dict(
                {
                    "bm25_stopwords": "lucene",
                    "bm25_cjk_bigrams": False,
                    "bm25_nfc": False,
                    "bm25_marks": False,
                    "bm25_nfkc": False,
                    **(params.get("index") or {}),
                }
            ),
            scorer,
            vectors,
            dense_weight=float(params.get("dense_weight", 0.5)),
            tuning=params.get("tuning"),
            duplicates=params.get("duplicates"),
        )
        index.manifest = manifest
        return index, params


def _check_rows(target: Path, skills: int, scorer: Any, vectors: dict[str, np.ndarray]) -> None:
    """:class:`~ragroute.errors.IndexFormatError` unless the BM25 scorer and every dense view (the
    ``full`` one always there) hold one row per skill of the catalogue: each file passes its
    checksum, so only a writer gone wrong gets here. Until session 45 a view one row short
    searched and named the wrong skill for every row past the gap, or failed deep in a search."""
    from ragroute.errors import IndexFormatError

    if "full" not in vectors:
        raise IndexFormatError(f"{target}: the skill index lacks its 'full' dense view; build it again")
    rows = {"the BM25 scorer": scorer.n_docs}
    rows.update({f"dense view {name!r}": len(m) if m.ndim == 2 else -1 for name, m in vectors.items()})
    for what, n in rows.items():
        if n != skills:
            held = f"{n} rows" if n >= 0 else "no matrix"
            raise IndexFormatError(f"{target}: {what} holds {held} for {skills} skills; build it again")


# ---------------------------------------------------------------------------- adaptation


def pseudo_queries(catalogue: Catalogue, n: int, seed: int) -> list[tuple[int, str]]:
    """``(skill position, query)`` pairs cut from the catalogue: the description of up to ``n``
    skills that have a description and a body, drawn by skill id (:func:`~ragroute.draws.drawn`:
    the same skills in any catalogue order; until session 41 a shuffle of positions, and seal_tools
    in another order tuned dense weight 0.5 instead of 0.4)."""
    positions = [i for i, s in enumerate(catalogue) if s.description.strip() and s.body.strip()]
    picks = drawn([catalogue[i].id for i in positions], n, seed, "skill-pseudo-queries")
    return [(positions[int(j)], catalogue[positions[int(j)]].description) for j in picks]


def _without(text: str, phrase: str) -> str:
    return re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE) if phrase.strip() else text


def tune_dense_weight(
    index: SkillIndex, *, show_progress: bool | None = None
) -> tuple[float, dict[str, Any]]:
    """The dense weight with the best MRR@10 on pseudo-queries from the catalogue (see the module doc).

    Each pseudo-query (a skill's description) is scored against every skill's name and body
    (descriptions left out, and every literal copy of a skill's description removed from its own
    body, so no pseudo-query can be matched verbatim) by a BM25 scorer and by the encoder; the
    weight is chosen on the fused z-scores. Returns ``(weight, report)``.
    """
    from ragroute.index.bm25_scoring import BM25Scorer
    from ragroute.index.bm25_tokenize import tokenize_many

    params = index.params
    pairs = pseudo_queries(index.catalogue, params.pseudo_queries, params.seed)
    if len(pairs) < 10:
        return params.dense_weight, {
            "pseudo_queries": len(pairs),
            "note": "fewer than 10 skills with a description and a body: fixed weight",
        }
    # The pool the pseudo-queries are searched in: their own skills plus random others (at most
    # ``tuning_pool`` in all, so tuning re-encodes a bounded number of stripped texts).
    targets_set = {i for i, _ in pairs}
    others = [i for i in range(len(index.catalogue)) if i not in targets_set]
    extra = drawn(
        [index.catalogue[i].id for i in others],
        max(params.tuning_pool - len(targets_set), 0),
        params.seed + 1,
        "skill-tuning-pool",
    )
    pool = sorted(targets_set | {others[int(j)] for j in extra})
    where = {p: j for j, p in enumerate(pool)}
    stripped = [
        Skill(s.id, s.name, "", _without(s.body, s.description), s.metadata)
        for s in (index.catalogue[p] for p in pool)
    ]
    weights = {**params.bm25_fields, "description": 0}
    if not any(int(w) > 0 for w in weights.values()):
        weights["body"] = 1
    scorer = BM25Scorer.fit(tokenize_many([bm25_text(s, weights) for s in stripped], params.tokenizer))
    queries = [q for _, q in pairs]
    targets = np.asarray([where[i] for i, _ in pairs])
    bm25 = np.stack(
        [scorer.get_scores(without_negative_idf(scorer, t)) for t in tokenize_many(queries, params.tokenizer)]
    )
    docs = index.encoder.encode_documents(
        [view_text(s, "full") for s in stripped], show_progress=show_progress
    )
    dense = index.query_vectors(queries) @ np.asarray(docs, dtype=np.float32).T
    zb, zd = zscore(bm25), zscore(dense)
    curve, margin = {}, {}
    for w in WEIGHT_GRID:
        fused = (1.0 - w) * zb + w * zd
        curve[w] = _mrr10(fused, targets)
        margin[w] = _margin(fused, targets)
    # The fused curve is flat near its top (pseudo-queries are easy), so which side of 0.5 it peaks
    # on is noise; the single methods' MRR is the robust part: lean towards the better one
    # (seal_tools: BM25 0.970 vs dense 0.919 on pseudo-queries, fused peak at 0.7 by 0.009; on the
    # BM25 side the peak is 0.3). Ties in MRR@10 (small catalogues) go to the weight under which
    # the right skills stand out most.
    # A curve flat over the whole grid (every pseudo-query found first whatever the weight: a small
    # catalogue) says nothing about the weight: the configured one is kept. And one method alone
    # (weight 0 or 1) must win outright: on a tie it would drop the other's ranking for every
    # query the pseudo-queries do not resemble (12 SKILL.md skills: weight 0, and a task sharing
    # no word with any skill was ranked in name order, every BM25 score 0).
    rounded = {w: round(v, 4) for w, v in curve.items()}
    flat = len(set(rounded.values())) == 1
    bm25_side = curve[0.0] >= curve[1.0]
    side = [w for w in WEIGHT_GRID if (w <= 0.5 if bm25_side else w >= 0.5)]
    best = max(side, key=lambda w: (rounded[w], 0.0 < w < 1.0, round(margin[w], 4), -abs(w - 0.5)))
    if flat:
        best = params.dense_weight
    weight = (1.0 - params.shrink) * best + params.shrink * 0.5
    report = {
        "pseudo_queries": len(pairs),
        "pool": len(pool),
        "mrr@10": {str(w): round(v, 4) for w, v in curve.items()},
        "best_grid_weight": best,
        "side": "bm25" if bm25_side else "dense",
        "bm25_mrr@10": round(curve[0.0], 4),
        "dense_mrr@10": round(curve[1.0], 4),
    }
    if flat:
        report["note"] = "every weight ranks the pseudo-queries alike: the configured weight is kept"
    return round(float(weight), 4), report


def _mrr10(scores: np.ndarray, targets: np.ndarray) -> float:
    own = scores[np.arange(len(targets)), targets][:, None]
    ranks = (scores > own).sum(axis=1) + 1
    return float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))


def _margin(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean gap between each target's fused score and the best other skill's."""
    rows = np.arange(len(targets))
    own = scores[rows, targets].copy()
    others = scores.copy()
    others[rows, targets] = -np.inf
    return float(np.mean(own - others.max(axis=1)))


def duplicate_groups(ids: Sequence[str], vectors: np.ndarray, threshold: float) -> list[list[str]]:
    """Groups (catalogue order) of skills linked by embedding cosine >= ``threshold`` (blocks of
    1024 rows, so memory stays small on 100k skills; each pair is read once, from the row of its
    first skill).

    A block's links are joined in numpy and scipy, not pair by pair: each linked skill to the first
    row of the block linking it, each row to the first rows of the skills it links, and each skill
    to the first skill of its group so far; scipy's connected components join these. Until session
    52 every linked pair went through a union-find in Python: a catalogue of 4,000 near-identical
    tools (8 million pairs) took 3 s and a gigabyte, 16,000 of them about a minute (n^2 pairs).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    vectors = np.asarray(vectors, dtype=np.float32)
    first = np.arange(n)  # the first skill (lowest position) of each skill's group so far
    for start in range(0, n, 1024):
        linked = np.triu(vectors[start : start + 1024] @ vectors.T >= threshold, k=start + 1)
        rows, cols = np.nonzero(linked)  # the pairs (start + row, col), col > start + row
        if len(rows) == 0:
            continue
        by = linked.argmax(axis=0)  # the first row of the block linking each skill
        shared = np.zeros((len(linked), len(linked)), dtype=bool)
        shared[rows, by[cols]] = True  # a row and the first row linking a skill it links
        a, b = np.nonzero(shared)
        seen = np.flatnonzero(linked.any(axis=0))
        ends = (
            np.concatenate([a + start, seen, np.arange(n)]),
            np.concatenate([b + start, by[seen] + start, first]),
        )
        graph = coo_matrix((np.ones(len(ends[0]), dtype=np.int8), ends), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        lowest = np.full(int(component.max()) + 1, n, dtype=np.int64)
        np.minimum.at(lowest, component, np.arange(n))
        first = lowest[component]
    groups: dict[int, list[str]] = {}
    for i, root in enumerate(first.tolist()):
        groups.setdefault(root, []).append(ids[i])
    return [g for g in groups.values() if len(g) > 1]

"""Train the default cross-encoder reranker here, offline, from the bundled all-MiniLM-L6-v2.

Data: labelled query sets in the BEIR layout (``corpus.jsonl``) or the SKILLS layout
(``skills.jsonl``), e.g. ``../shared/data/{toollens,metatool,seal_tools,musique}``
and the Glasgow collections. Each set's queries are split in two halves by a
stable hash of ``set name + query id`` (:func:`query_fold`): the reranker trains
only on fold 0, and benchmarks report only fold 1 (``ragroute bench rerank`` and
``ragroute bench skills`` read the fold rule from the model's manifest), so no
reported query was ever trained on. A tenth of the training queries is kept
apart to fit the Platt calibration (logit -> probability of relevance).

Pairs: for every training query, up to ``positives`` judged-relevant candidates
and ``hard_negatives`` of the best unjudged candidates of the library's own
stage-1 retrieval (the one the reranker follows when deployed: for a SKILLS set the skill
router's hybrid stage 1, else a hybrid BM25 + dense index over the set), plus
``random_negatives`` random ones. Calibration pairs keep each candidate's stage-1 rank and
score (standardised within its pool), which the calibration weighs. Candidate text is what the reranker
reads at query time (:func:`~ragroute.rerank.cross_encoder.candidate_text`). Opt-in
(``pseudo_queries``, :func:`pseudo_pairs`): training pairs from pseudo-queries cut from each
document set's own documents; measured in session 47 and not adopted (docs/rerank.md).

Model: the bundled MiniLM encoder cut to its first ``layers`` transformer layers
(cheaper at query time: the reranker must score 20 candidates within the
latency budget on 2 cores) with a fresh one-logit head, trained with binary
cross-entropy on each pair (``loss="bce"``) or, listwise, with a softmax over each training
query's candidates (``loss="listwise"``: each relevant candidate against that query's negatives,
the "localized contrastive estimation" of Gao, Dai and Callan 2021), or the sum of the two over the
same query batches (``loss="bce+listwise"``), AdamW with linear warm-up and decay, deterministic
for a seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.evaluation.metrics import auroc
from ragroute.loaders.beir import collection_folders, corpus_files
from ragroute.rerank.cross_encoder import (
    CALIBRATION_FILE,
    FAMILY,
    KIND,
    Calibration,
    candidate_text,
    pool_zscores,
    reading,
)
from ragroute.types import Document, Hit

FOLD_RULE = "first byte of sha1(folder name + ':' + query id) % 2; fold 0 trains, fold 1 is held out"


def query_fold(set_name: str, query_id: str) -> int:
    """0 (training) or 1 (held out) for a query of a labelled set; stable across runs and machines.

    Only the set's folder name counts (``glasgow/cran`` and ``cran`` are one set), so a
    benchmark pointed at one collection holds out exactly the queries training left out.
    """
    folder = set_name.rstrip("/").rsplit("/", 1)[-1]
    digest = hashlib.sha1(f"{folder}:{query_id}".encode()).digest()
    return digest[0] % 2


def training_queries(
    params: Mapping[str, Any], model: str | Path | None = None
) -> tuple[set[str] | None, str]:
    """The texts (:func:`~ragroute.route.folds.normalized_text`) of every query a reranker trained by
    ``ragroute rerank train`` may have trained or been calibrated on, read back from what its
    manifest ``params`` record: the sets (``data.roots`` and ``data.calibration_roots``), the split
    and the fold rule. Every judged fold-0 query of each set counts (a superset of the ones
    training drew), so a benchmark can leave out any query whose text training read, whatever
    folder it now sits in: the fold rule alone goes by the folder's name, and a copy or slice of a
    training set under another name would mix its training queries into the held-out ones.

    Recorded relative roots are looked for from the working directory, then from each folder above
    ``model`` (the manifest records them as training was run, e.g. ``../shared/data/toollens`` from
    the project folder). Returns ``(texts, "")``, or ``(None, why)`` when they cannot be read back
    (an older manifest without its sets, or a set not found here)."""
    from ragroute.loaders.beir import load_beir_queries, load_qrels
    from ragroute.route.folds import normalized_text

    data = params.get("data") or {}
    recorded = [str(r) for r in [*(data.get("roots") or []), *(data.get("calibration_roots") or [])]]
    if not recorded:
        return None, "its manifest records no training sets"
    split = str(data.get("split") or "dev")
    bases = [Path.cwd(), *(Path(model).resolve().parents if model is not None else [])]
    texts: set[str] = set()
    for root in recorded:
        found = next((base / root for base in bases if (base / root).exists()), None)
        if found is None:
            return None, f"its training set {root} was not found"
        try:
            sets = expand_roots([found])
        except RagrouteError:
            return None, f"its training set {root} holds no labelled set"
        for name, folder in sets:
            qrels_file = folder / "qrels" / f"{split}.tsv"
            if not (folder / "queries.jsonl").is_file() or not qrels_file.is_file():
                return None, f"its training set {folder} lacks queries.jsonl or qrels/{split}.tsv"
            judged = load_qrels(qrels_file)
            texts.update(
                normalized_text(q.text)
                for q in load_beir_queries(folder / "queries.jsonl")
                if q.id in judged and query_fold(name, q.id) == 0
            )
    return texts, ""


#: a trained model whose logit alone separates the held-apart calibration pairs (relevant from
#: not) with an AUROC below this has not learned to rank: its probabilities would be its first
#: stage's prior alone. Training, averaging and recalibration refuse to publish it (:func:`check_learned`).
MIN_LOGIT_AUROC = 0.6

#: training objectives: ``bce`` scores each pair on its own; ``listwise`` each relevant candidate
#: against the negatives of its query (:func:`listwise_loss`); ``bce+listwise`` their sum, over
#: batches of whole queries
LOSSES = ("bce", "listwise", "bce+listwise")


@dataclass
class TrainParams:
    """How the reranker is trained (recorded in its manifest)."""

    layers: int = 6
    max_length: int = 64
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5  # 2e-4 until session 21 (docs/rerank.md#learning-rate)
    warmup: float = 0.1
    positives: int = 2
    hard_negatives: int = 4
    hard_pool: int = 20
    random_negatives: int = 1
    queries_per_set: int = 1000
    calibration_share: float = 0.1
    freeze_embeddings: bool = True
    title_words: bool = True  # identifier titles read as words too (candidate_text); False before 2026-12-02
    # skill bodies read without what they repeat (candidate_text); opt-in: measured and not adopted
    # (docs/rerank.md#compact-bodies)
    compact_bodies: bool = False
    seed: int = 0  # which queries, positives and negatives make the pairs (and the draw's, when unset)
    # the model's own draw: dropout masks and batch order; None (or ``seed``) = ``seed``. Draws of one
    # ``seed`` share their pairs, held-apart calibration queries and initialisation (head included), so
    # they can be averaged (:func:`ragroute.rerank.average.average_rerankers`)
    draw: int | None = None
    threads: int | None = None
    # below this AUROC of the logit on the held-apart pairs nothing is published (check_learned)
    min_logit_auroc: float = MIN_LOGIT_AUROC
    # "bce" (each pair alone), "listwise" (a softmax over each query's candidates) or their sum (LOSSES)
    loss: str = "bce"
    # where the model trains: "cpu", "cuda", "cuda:1", ... (not part of the recipe: draws trained on
    # different devices may be averaged; the published model runs on the CPU either way)
    device: str = "cpu"
    # pseudo-queries cut from each document set's own documents (title, sentence, keyphrases: no
    # label read) added as training pairs, at most this many per set; 0 = none (pseudo_pairs)
    pseudo_queries: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise RagrouteError(
                f"unknown reranker training loss {self.loss!r}; choose one of {', '.join(LOSSES)}"
            )
        from ragroute.training import check_training_settings

        check_training_settings(
            self, "reranker training", counts=("epochs", "batch_size"), shares=("warmup",)
        )

    @property
    def model_seed(self) -> int:
        """The seed of the model's draw (``draw``, else ``seed``)."""
        return self.seed if self.draw is None else self.draw

    @classmethod
    def from_manifest(cls, params: Mapping[str, Any]) -> TrainParams:
        """The settings a trained reranker's manifest ``params`` record; the reading settings that
        older manifests lack are filled in as those models were trained
        (:func:`~ragroute.rerank.cross_encoder.reading`)."""
        stored = {**params.get("train", {}), **reading(params)}
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})


@dataclass
class LabelledSet:
    """One labelled set: its candidates (as documents) and its queries with relevance judgements."""

    name: str
    documents: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    catalogue: Any = None  # a SKILLS set's catalogue: its stage 1 is the skill router's

    def fold(self, fold: int) -> dict[str, str]:
        return {q: t for q, t in self.queries.items() if query_fold(self.name, q) == fold and q in self.qrels}


@dataclass
class Pair:
    query: str
    text: str
    label: float
    set_name: str = ""
    stage1_rank: int = 0  # rank in the stage-1 pool (1-based), 0 when stage 1 did not retrieve it
    stage1_z: float = 0.0  # its stage-1 score standardised within the pool (calibration pairs)
    stage1_kind: str = "documents"  # which first stage made the pool: "skills" or "documents"


@dataclass
class PairSet:
    train: list[Pair] = field(default_factory=list)
    calibration: list[Pair] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def load_labelled_set(root: Path, split: str = "dev", name: str | None = None) -> LabelledSet:
    """A BEIR folder (``corpus*.jsonl``: one corpus file or several, as TAT-QA's tables and
    paragraphs) or a SKILLS folder (``skills.jsonl``) with ``qrels/<split>.tsv``."""
    from ragroute.loaders import load_beir

    root = Path(root)
    label = name or root.name
    if (root / "skills.jsonl").is_file():
        from ragroute.loaders.beir import load_beir_queries, load_qrels
        from ragroute.skills import load_catalogue

        catalogue = load_catalogue(root / "skills.jsonl")
        qrels = load_qrels(root / "qrels" / f"{split}.tsv")
        queries = {q.id: q.text for q in load_beir_queries(root / "queries.jsonl")}
        return LabelledSet(label, catalogue.documents(), queries, qrels, catalogue=catalogue)
    if corpus_files(root):
        data = load_beir(root, split=split)
        return LabelledSet(label, list(data.corpus), {q.id: q.text for q in data.queries}, dict(data.qrels))
    raise RagrouteError(f"{root}: neither a BEIR folder (corpus*.jsonl) nor a SKILLS folder (skills.jsonl)")


def expand_roots(roots: Sequence[Path]) -> list[tuple[str, Path]]:
    """``(set name, folder)`` for each root; a folder of BEIR collections (like ``glasgow``)
    gives one set per collection, named ``glasgow/cran``."""
    out = []
    for root in roots:
        root = Path(root)
        if corpus_files(root) or (root / "skills.jsonl").is_file():
            out.append((root.name, root))
            continue
        # hidden folders (`.`, `_`) left out, as the benchmarks' collection roots leave them out: until
        # session 55 a `_old/` copy was one more set, trained on and scored by `bench rerank`
        subsets = [p for p in collection_folders(root) if corpus_files(p)]
        if not subsets:
            raise RagrouteError(f"{root}: no BEIR or SKILLS data in it or in its sub-folders")
        out.extend((f"{root.name}/{p.name}", p) for p in subsets)
    return out


def build_pairs(
    sets: Sequence[LabelledSet],
    encoder: Any,
    params: TrainParams,
    *,
    calibration_only: Collection[str] = (),
    say: Callable[[str], None] = lambda _: None,
) -> PairSet:
    """Training and calibration pairs from fold 0 of every set (hard negatives from the stage 1 the
    reranker follows when deployed, see :func:`_stage1`). Sets named in ``calibration_only`` give
    only their calibration pairs (the held-apart tenth): never trained on, they widen what the
    calibration has seen."""
    rng = random.Random(params.seed)

    def text_of(doc: Document) -> str:
        return candidate_text(
            Hit(doc_id=doc.id, score=0.0, title=doc.title, text=doc.text, metadata=doc.metadata),
            title_words=params.title_words,
            compact_bodies=params.compact_bodies,
        )

    out = PairSet()
    pseudo: list[Pair] = []
    for labelled in sets:
        fold = sorted(labelled.fold(0).items())
        rng.shuffle(fold)
        fold = fold[: params.queries_per_set]
        wants_pseudo = bool(
            params.pseudo_queries and labelled.catalogue is None and labelled.name not in calibration_only
        )
        if not fold and not wants_pseudo:
            continue
        search = _first_stage(labelled, encoder)
        if wants_pseudo:
            made = pseudo_pairs(labelled, search, params, text_of, say=say)
            pseudo.extend(made)
            out.counts[f"{labelled.name} (pseudo-queries)"] = {
                "queries": len({p.query for p in made}),
                "pairs": len(made),
                "positives": sum(int(p.label) for p in made),
            }
        if not fold:
            continue
        role = "calibration-only" if labelled.name in calibration_only else "training"
        say(f"{labelled.name}: {len(fold)} {role} queries over {len(labelled.documents)} candidates")
        by_id = {d.id: d for d in labelled.documents}
        ranked = search([t for _, t in fold], params.hard_pool)
        n_calibration = max(1, int(round(len(fold) * params.calibration_share)))
        counts = {"queries": len(fold), "pairs": 0, "positives": 0}
        if labelled.name in calibration_only:
            counts.update(calibration_only=1, queries=min(n_calibration, len(fold)))
        for i, ((qid, text), hits) in enumerate(zip(fold, ranked)):
            gold = [d for d, grade in labelled.qrels.get(qid, {}).items() if grade > 0 and d in by_id]
            if not gold:
                continue
            rank = {h.doc_id: r for r, h in enumerate(hits, 1)}
            chosen = rng.sample(gold, min(len(gold), params.positives))
            pairs = [Pair(text, text_of(by_id[d]), 1.0, labelled.name, rank.get(d, 0)) for d in chosen]
            hard = [h.doc_id for h in hits if h.doc_id not in labelled.qrels.get(qid, {})]
            negatives = hard[: params.hard_negatives]
            pool = [d.id for d in rng.sample(labelled.documents, min(len(labelled.documents), 50))]
            negatives += [d for d in pool if d not in negatives and d not in gold][: params.random_negatives]
            pairs += [Pair(text, text_of(by_id[d]), 0.0, labelled.name, rank.get(d, 0)) for d in negatives]
            if i < n_calibration:  # calibrate on what the reranker sees at query time: the whole pool
                stage1_z = pool_zscores([h.score for h in hits])
                pairs = [
                    Pair(
                        text,
                        text_of(by_id[h.doc_id]),
                        float(labelled.qrels.get(qid, {}).get(h.doc_id, 0) > 0),
                        labelled.name,
                        r,
                        float(stage1_z[r - 1]),
                        "skills" if labelled.catalogue is not None else "documents",
                    )
                    for r, h in enumerate(hits, 1)
                ]
            if i >= n_calibration and labelled.name in calibration_only:
                continue
            (out.calibration if i < n_calibration else out.train).extend(pairs)
            counts["pairs"] += len(pairs)
            counts["positives"] += sum(int(p.label) for p in pairs)
        out.counts[labelled.name] = counts
    # a text held apart for calibration in one set is not trained on in another (every ADI query is
    # also a CISI query: until session 45 one copy could calibrate and the other train)
    from ragroute.route.folds import normalized_text

    apart = {normalized_text(p.query) for p in out.calibration}
    # a pseudo-query calibrates nothing, yet its text (a title, a sentence) may be worded as a
    # labelled query: it trains only when it is no query of these sets, held apart or held out
    # (until session 52 none was checked: a fold-1 or calibration query could train through it)
    asked = {normalized_text(t) for labelled in sets for t in labelled.queries.values()} if pseudo else set()
    kept: list[Pair] = []
    dropped: list[Pair] = []
    for p in out.train:
        (dropped if normalized_text(p.query) in apart else kept).append(p)
    for p in pseudo:
        (dropped if normalized_text(p.query) in asked else kept).append(p)
    out.train = kept
    for p in dropped:
        out.counts[p.set_name]["pairs"] -= 1
        out.counts[p.set_name]["positives"] -= int(p.label)
    rng.shuffle(out.train)
    return out


#: a set's first stage: ``search(texts, k)`` -> each text's best ``k`` hits
Search = Callable[[list[str], int], list[list[Hit]]]


def _first_stage(labelled: LabelledSet, encoder: Any) -> Search:
    """The first stage the reranker follows when deployed, built once per set: for a SKILLS set the
    skill router's (hybrid over name, description and body, its catalogue-adapted weight), else a
    hybrid index."""
    if labelled.catalogue is None:
        from ragroute.index.build import build_index

        index = build_index(labelled.documents, "hybrid", encoder=encoder, name=labelled.name)
        return lambda texts, k: index.search_many(texts, k=k)
    from ragroute.skills.index import SkillIndex

    skills = SkillIndex.build(labelled.catalogue, encoder)

    def search(texts: list[str], k: int) -> list[list[Hit]]:
        fused = skills.score(texts, "hybrid")["fused"]
        return [
            [Hit(doc_id=skills.catalogue[p].id, score=float(row[p])) for p in skills.top(row, k).tolist()]
            for row in fused
        ]

    return search


def pseudo_pairs(
    labelled: LabelledSet,
    search: Search,
    params: TrainParams,
    text_of: Callable[[Document], str],
    *,
    say: Callable[[str], None] = lambda _: None,
) -> list[Pair]:
    """Training pairs from up to ``params.pseudo_queries`` pseudo-queries cut from the set's own
    documents (:func:`~ragroute.experts.pseudo_queries.cut_pseudo_queries`: a title, a sentence or
    keyphrases; no relevance label is read), each with the document it was cut from as its
    positive, read without the cut text (the sentence taken out of its body for a sentence query;
    for a title query every candidate is read without its title, so that neither a copy nor a
    missing title tells the positive apart), and as negatives ``hard_negatives`` drawn from the
    set's first stage below its best other document (that one is often as relevant as the source:
    a false negative) plus ``random_negatives`` random ones. The documents a benchmark searches
    are unlabelled text here, as an expert's are. A set too small to cut pseudo-queries from gives
    none, said in one line."""
    from ragroute.experts.pseudo_queries import cut_pseudo_queries

    try:
        cut = cut_pseudo_queries(
            labelled.documents,
            max_queries=params.pseudo_queries,
            seed=params.seed,
            purpose="reranker pseudo-query pairs",
        )
    except RagrouteError as exc:
        say(f"{labelled.name}: no pseudo-query pairs ({exc})")
        return []
    rng = random.Random(f"{params.seed}:{labelled.name}:pseudo")
    by_id = {d.id: d for d in labelled.documents}
    ranked = search([q.text for q in cut], params.hard_pool)
    out: list[Pair] = []
    name = f"{labelled.name} (pseudo-queries)"
    for query, hits in zip(cut, ranked):
        source = by_id[query.doc_id]
        if query.kind == "sentence":
            source = replace(source, text=" ".join(source.text.replace(query.text, " ").split()))
        others = [h.doc_id for h in hits if h.doc_id != query.doc_id][1:]
        negatives = rng.sample(others, min(len(others), params.hard_negatives))
        pool = [d.id for d in rng.sample(labelled.documents, min(len(labelled.documents), 50))]
        negatives += [d for d in pool if d not in negatives and d != query.doc_id][: params.random_negatives]
        candidates = [source, *(by_id[d] for d in negatives)]
        if query.kind == "title":  # every candidate read without its title, the positive's being the query
            candidates = [replace(d, title="") for d in candidates]
        out += [Pair(query.text, text_of(d), float(i == 0), name) for i, d in enumerate(candidates)]
    say(f"{labelled.name}: {len(cut)} pseudo-queries cut from its documents, {len(out)} training pairs")
    return out


def train_reranker(
    pairs: PairSet,
    out: Path,
    params: TrainParams,
    *,
    name: str = "",
    data: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune, calibrate and publish a reranker artifact at ``out``; returns its training report."""
    # a calibration is fitted only on pairs of both labels (fit_platt): refused before training (until
    # session 52 such a reranker was published with the raw sigmoid, in silence, and --draws trained
    # every draw before refusing their average)
    if len({p.label for p in pairs.calibration}) < 2:
        check_fitted(Calibration(), len(pairs.calibration), out, "the reranker")
    model, calibration, report = fit_reranker(pairs, params, show_progress=show_progress)
    loss = f"final training loss {report['final_loss']:.3f}"
    check_learned(report["calibration"], out, loss, bar=params.min_logit_auroc)
    warn_few_calibration_queries(report["calibration"], out)
    manifest_params = {
        "base": report.pop("base"),
        "train": asdict(params),
        "max_length": params.max_length,
        "fold_rule": FOLD_RULE,
        "data": dict(data or {}),
        "report": report,
    }
    report["onnx"] = publish_reranker(model.to("cpu"), calibration, out, manifest_params, name=name)
    return report


def fit_reranker(
    pairs: PairSet, params: TrainParams, *, show_progress: bool | None = None
) -> tuple[Any, Calibration, dict[str, Any]]:
    """Fine-tune the cross-encoder on ``pairs.train`` (on ``params.device``) and fit its calibration
    on ``pairs.calibration``; returns the sentence-transformers CrossEncoder, the calibration and
    the training report (nothing is published: :func:`train_reranker` does that)."""
    import torch
    from sentence_transformers import CrossEncoder

    from ragroute.encode.resolve import resolve_model, set_offline_env
    from ragroute.encode.sentence_transformers import quiet_transformers
    from ragroute.training import check_device, fine_tune

    if not pairs.train:
        raise RagrouteError("no training pairs: check the data folders and the split")
    check_device(params.device)
    set_offline_env()
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)  # the fresh head's initialisation: one per recipe, shared by its draws
    if params.threads:
        torch.set_num_threads(params.threads)
    base = resolve_model("all-MiniLM-L6-v2")
    with quiet_transformers():  # the new head is "MISSING" from the base model by design
        model = CrossEncoder(
            str(base.path),
            num_labels=1,
            max_length=params.max_length,
            local_files_only=True,
            device=params.device,
        )
    bert = model.model.base_model
    if params.layers < len(bert.encoder.layer):
        bert.encoder.layer = bert.encoder.layer[: params.layers]
        model.model.config.num_hidden_layers = params.layers
    tokenizer, net = model.tokenizer, model.model
    if params.freeze_embeddings:  # the 11.7M word-embedding weights: most of the optimiser's work
        bert.embeddings.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    if params.model_seed != params.seed:  # another draw: its own dropout masks (and batch order below)
        torch.manual_seed(params.model_seed)

    def logits_of(batch: Sequence[Pair]) -> Any:
        features = tokenizer(
            [p.query for p in batch],
            [p.text for p in batch],
            padding=True,
            truncation="longest_first",
            max_length=params.max_length,
            return_tensors="pt",
        ).to(params.device)
        return net(**features).logits.view(-1)

    def pair_loss(positions: list[int]) -> Any:
        batch = [pairs.train[i] for i in positions]
        labels = torch.tensor([p.label for p in batch], dtype=torch.float32, device=params.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits_of(batch), labels)

    groups = query_groups(pairs.train)

    def group_loss(positions: list[int]) -> Any:
        members = [groups[g] for g in positions]
        batch = [pairs.train[i] for group in members for i in group]
        labels = torch.tensor([p.label for p in batch], dtype=torch.float32, device=params.device)
        return query_batch_loss(logits_of(batch), labels, [len(group) for group in members], params.loss)

    if params.loss != "bce":  # batches of whole queries holding about batch_size pairs
        items, batch_size, batch_loss = len(groups), listwise_batch(params.batch_size, groups), group_loss
    else:
        items, batch_size, batch_loss = len(pairs.train), params.batch_size, pair_loss

    start = time.perf_counter()
    net.train()
    losses = fine_tune(
        trainable,
        items,
        batch_loss,
        epochs=params.epochs,
        batch_size=batch_size,
        learning_rate=params.learning_rate,
        warmup=params.warmup,
        seed=params.model_seed,
        desc="training reranker",
        show_progress=show_progress,
    )
    train_s = time.perf_counter() - start
    net.eval()
    calibration, calibration_report = fit_calibration(model, pairs.calibration, params)
    report = {
        "base": base.model_id,
        "train_pairs": len(pairs.train),
        "calibration_pairs": len(pairs.calibration),
        "sets": pairs.counts,
        "train_s": round(train_s, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "calibration": {**calibration.to_dict(), **calibration_report},
    }
    return model, calibration, report


def query_groups(pairs: Sequence[Pair]) -> list[list[int]]:
    """Positions of ``pairs`` grouped by their query (set and text), in first-seen order; only
    groups with a relevant and a non-relevant candidate, the ones a listwise loss can learn from."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        grouped.setdefault((p.set_name, p.query), []).append(i)
    return [g for g in grouped.values() if len({pairs[i].label > 0 for i in g}) == 2]


def listwise_batch(pairs_per_batch: int, groups: Sequence[Sequence[int]]) -> int:
    """How many query groups make a batch of about ``pairs_per_batch`` pairs (at least one), so a
    listwise run takes about as many optimiser steps over the same pairs as a pairwise one."""
    mean = sum(len(g) for g in groups) / max(1, len(groups))
    return max(1, round(pairs_per_batch / max(mean, 1.0)))


def listwise_loss(logits: Any, labels: Any, sizes: Sequence[int]) -> Any:
    """Mean over the relevant candidates of ``-log softmax`` of each one's logit against its own
    query's non-relevant candidates (the other relevant ones left out): ``logits`` and ``labels``
    hold the groups one after another, ``sizes`` their lengths."""
    import torch

    terms = []
    for scores, relevant in zip(torch.split(logits, list(sizes)), torch.split(labels > 0, list(sizes))):
        negatives = scores[~relevant]
        for positive in scores[relevant]:
            terms.append(torch.logsumexp(torch.cat([positive.view(1), negatives]), 0) - positive)
    return torch.stack(terms).mean()


def query_batch_loss(logits: Any, labels: Any, sizes: Sequence[int], loss: str) -> Any:
    """The training loss of a batch of whole queries (``sizes``: each query's number of pairs, in
    order): :func:`listwise_loss`, plus the pairs' mean binary cross-entropy for ``bce+listwise``."""
    import torch

    value = listwise_loss(logits, labels, sizes)
    if loss == "bce+listwise":
        value = value + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return value


def publish_reranker(
    model: Any, calibration: Calibration, out: Path, manifest_params: Mapping[str, Any], *, name: str = ""
) -> dict[str, Any]:
    """Write the sentence-transformers CrossEncoder ``model``, its ``calibration`` and its ONNX
    fp32/int8 exports as a new build of the reranker artifact ``out`` (published atomically, the
    export report recorded as ``report.onnx`` in its manifest); returns the export report."""
    from ragroute.rerank.onnx_export import export_onnx
    from ragroute.store import write_artifact

    with write_artifact(
        out, FAMILY, KIND, name=name or Path(out).name, params=dict(manifest_params)
    ) as pending:
        model.save(str(pending.path))
        (pending.path / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()), encoding="utf-8")
        onnx = export_onnx(model, pending.path, int(manifest_params["max_length"]))
        recorded = pending.manifest.params
        recorded["report"] = {**recorded.get("report", {}), "onnx": onnx}
    return onnx


def fit_calibration(
    model: Any, pairs: Sequence[Pair], params: TrainParams
) -> tuple[Calibration, dict[str, Any]]:
    """Platt scaling with a stage-1 prior, ``sigmoid(a * logit + c / rank + d * stage1_z + b)``, fitted on
    held-out training pairs (log loss); ``model`` is a sentence-transformers CrossEncoder."""
    import torch

    def logits_of(batch: Sequence[Pair]) -> np.ndarray:
        features = model.tokenizer(
            [p.query for p in batch],
            [p.text for p in batch],
            padding=True,
            truncation="longest_first",
            max_length=params.max_length,
            return_tensors="pt",
        ).to(model.model.device)
        with torch.inference_mode():
            return model.model(**features).logits.view(-1).float().cpu().numpy()

    return fit_platt(pairs, logits_of)


def check_learned(
    report: Mapping[str, Any], out: Path, detail: str = "", *, bar: float = MIN_LOGIT_AUROC
) -> None:
    """Raise (before anything is published at ``out``) when the calibration ``report`` of
    :func:`fit_platt` shows a logit that does not rank: AUROC below ``bar`` (:data:`MIN_LOGIT_AUROC`) on
    the held-apart calibration pairs. A model whose training diverged or collapsed to a constant
    would otherwise be published and rerank by its first stage's prior alone, silently."""
    value = report.get("logit_auroc_all")
    if value is None or not value < bar:  # no pairs with both labels: nothing to judge
        return
    raise RagrouteError(
        f"the trained reranker did not learn to rank: its logit separates the {report.get('pairs_all')} "
        f"held-apart calibration pairs with AUROC {value:.3f} (< {bar}; 0.5 is chance)"
        + (f", {detail}" if detail else "")
        + f"; nothing was published at {out}. Train again with a lower --learning-rate or another --draw"
    )


def check_fitted(calibration: Calibration, pairs: int, out: Path, what: str) -> None:
    """Raise (before anything is published at ``out``) when no calibration could be fitted: the
    calibration pairs hold one label only, or none at all (:func:`fit_platt` then returns the raw
    sigmoid). Until session 44 ``rerank calibrate`` published that unfitted calibration over the
    fitted one, silently (``calibrated: false`` from then on), and ``rerank average`` published an
    average that was never calibrated."""
    if calibration.fitted:
        return
    raise RagrouteError(
        f"no calibration can be fitted for {what}: its {pairs} calibration pairs do not hold both "
        f"relevant and irrelevant candidates; nothing was published at {out} (check --data and --split)"
    )


MIN_CALIBRATION_QUERIES = 20
"""Held-apart queries below which a fitted calibration's probabilities are said to be rough."""


def warn_few_calibration_queries(report: Mapping[str, Any], out: Path) -> None:
    """A warning when the calibration was fitted on fewer than :data:`MIN_CALIBRATION_QUERIES`
    held-apart queries: its four coefficients, fitted on a pool or two, can be anything (an audit's
    run on 8 queries per set fitted c = 63 on one query's 20 pairs and published it in silence)."""
    queries = report.get("queries_all")
    if isinstance(queries, int) and queries < MIN_CALIBRATION_QUERIES:
        warnings.warn(
            f"{out}: the reranker's calibration was fitted on {queries} held-apart queries "
            f"(< {MIN_CALIBRATION_QUERIES}): its probabilities are rough; train on more queries",
            UserWarning,
            stacklevel=3,
        )


def fit_platt(
    pairs: Sequence[Pair],
    logits_of: Callable[[Sequence[Pair]], np.ndarray],
    previous: Calibration | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """Fit :class:`Calibration` on labelled ``pairs`` whose logits ``logits_of`` computes.

    Pairs from pools of a skill router's first stage (``stage1_kind == "skills"``) get a
    calibration of their own (``by_stage1["skills"]``); the main one is fitted on the others
    (document retrieval), or on all pairs when those are too few. Each first stage's rank and
    score are worth what they proved to be on its own pools. With ``previous`` (the same model's
    fitted calibration, when recalibrating) a first stage whose pairs do not hold both labels keeps
    its calibration from ``previous`` (named in the report's ``kept``: ``"documents"`` for the main
    one) instead of losing it, or the main one being fitted on skill pools.
    """
    if len({p.label for p in pairs}) < 2:
        return Calibration(), {"note": "too few calibration pairs: raw sigmoid"}
    # each distinct (query, text) is scored once: the same pair gets the same logit wherever it
    # sits in a batch (CPU kernels can round rows of one batch differently, and a model collapsed to
    # a constant must read as one, AUROC 0.5, not as its rounding noise)
    first: dict[tuple[str, str], int] = {}
    unique: list[Pair] = []
    for p in pairs:
        if (p.query, p.text) not in first:
            first[p.query, p.text] = len(unique)
            unique.append(p)
    row = np.array([first[p.query, p.text] for p in pairs])
    distinct = np.concatenate([logits_of(unique[b : b + 64]) for b in range(0, len(unique), 64)])
    logit = distinct[row]
    labels = np.array([p.label for p in pairs])
    skills = np.array([p.stage1_kind == "skills" for p in pairs])
    kept: list[str] = []
    if len(set(labels[~skills])) == 2:
        main, report = _fit_one(pairs, logit, ~skills)
    elif previous is not None and previous.fitted:
        main, report = previous, {}
        kept.append("documents")
    else:
        main, report = _fit_one(pairs, logit, np.ones_like(skills))
    report["pairs_all"] = len(pairs)
    report["queries_all"] = len({(p.set_name, p.query) for p in pairs})
    report["logit_auroc_all"] = round(auroc(labels > 0, logit), 4)
    by_stage1: dict[str, Calibration] = {}
    if len(set(labels[skills])) == 2:
        by_stage1["skills"], report["skills"] = _fit_one(pairs, logit, skills)
    for kind, calibration in (previous.by_stage1 if previous is not None else {}).items():
        if kind not in by_stage1:
            by_stage1[kind] = calibration
            kept.append(kind)
    if kept:
        report["kept"] = kept
    return replace(main, by_stage1=by_stage1), report


def _fit_one(
    pairs: Sequence[Pair], logits: np.ndarray, keep: np.ndarray
) -> tuple[Calibration, dict[str, Any]]:
    """``a, b, c, d`` by logistic regression on the kept pairs' logits, stage-1 ranks and scores."""
    from sklearn.linear_model import LogisticRegression

    pairs = [p for p, kept in zip(pairs, keep) if kept]
    logit = logits[keep]
    ranks = np.array([p.stage1_rank for p in pairs], dtype=np.float64)
    prior = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1.0), 0.0)
    stage1_z = np.array([p.stage1_z for p in pairs], dtype=np.float64)
    y = np.array([p.label for p in pairs])
    with_score = bool(np.any(stage1_z))  # pairs from whole stage-1 pools carry their scores
    features = np.c_[logit, prior, stage1_z] if with_score else np.c_[logit, prior]
    fit = LogisticRegression(C=1e4).fit(features, y)
    coef = [float(v) for v in fit.coef_[0]] + [0.0]  # d = 0 when no pair carries a stage-1 score
    calibration = Calibration(coef[0], float(fit.intercept_[0]), coef[1], fitted=True, d=coef[2])
    probs = calibration(logit, ranks, stage1_z)
    pools = [(p.set_name, p.query) for p in pairs]
    return calibration, {
        "pairs": len(pairs),
        "logit_auroc": round(auroc(y > 0, logit), 4),
        # how each held-apart pool is ordered: by the logit alone, and by the calibrated probability
        # (what reranking uses); only pools of a whole stage-1 list hold both labels in order
        "logit_mrr": round(pool_mrr(pools, logit, y), 4),
        "mrr": round(pool_mrr(pools, probs, y), 4),
        "brier": round(float(np.mean((probs - y) ** 2)), 4),
        "brier_constant": round(float(np.mean((y.mean() - y) ** 2)), 4),
        "positives": int(y.sum()),
    }


def pool_mrr(pools: Sequence[Any], scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean reciprocal rank of the first relevant candidate when each pool (pairs sharing a key in
    ``pools``) is ordered by ``scores``, over the pools holding a relevant one (ties: worst rank)."""
    by_pool: dict[Any, list[int]] = {}
    for i, key in enumerate(pools):
        by_pool.setdefault(key, []).append(i)
    ranks = []
    for rows in by_pool.values():
        score, relevant = scores[rows], labels[rows] > 0
        if relevant.any():
            best = score[relevant].max()
            ranks.append(1.0 / float(np.sum(score >= best)))
    return float(np.mean(ranks)) if ranks else 0.0


def calibration_pairs(
    trained: Sequence[Path], chosen: Sequence[Path], build: Callable[[list[Path]], PairSet]
) -> list[Pair]:
    """The calibration pairs of the ``chosen`` sets (all ``trained`` ones when none are chosen).

    ``build`` (:func:`build_pairs` over roots) always runs over the training roots first, in
    training order: which queries were held apart for calibration depends on that sequence, and
    any other order would calibrate on queries the model was trained on. Chosen sets that were
    not trained on come after them.
    """
    known = {Path(r).resolve() for r in trained}
    extra = [Path(r) for r in chosen if Path(r).resolve() not in known]
    pairs = build([Path(r) for r in trained] + extra)
    names = {name for name, _ in expand_roots(list(chosen) or list(trained))}
    return [p for p in pairs.calibration if p.set_name in names]


def calibration_sets(
    data: Mapping[str, Any], roots: Sequence[Path], default: Sequence[str]
) -> tuple[list[Path], list[Path]]:
    """The sets a model was trained on (its manifest's ``data.roots``, else ``default``) and the
    ones to recalibrate on: ``roots`` when given, else the trained ones plus the calibration-only
    ones it was calibrated with (``data.calibration_roots``), else ``[]`` (= the trained ones)."""
    trained = [Path(r) for r in (data.get("roots") or default)]
    if roots:
        return trained, [Path(r) for r in roots]
    extra = [Path(r) for r in data.get("calibration_roots") or []]
    return trained, [*trained, *extra] if extra else []


def recalibrate(model: Path, pairs: Sequence[Pair]) -> dict[str, Any]:
    """Refit the calibration of the reranker artifact ``model`` on ``pairs`` and publish it as a
    new build (the model files are copied unchanged); returns the new calibration report."""
    import shutil

    from ragroute.rerank.cross_encoder import CrossEncoderReranker
    from ragroute.store import artifact_lock, open_snapshot, write_artifact

    # the model scored below is the one whose files are copied: until session 41 it was loaded
    # and scored before the lock was taken, so a `rerank train` publishing meanwhile got the
    # calibration fitted on the old model's logits, silently
    with artifact_lock(model):  # the build read here stays current (and on disk) until published
        reranker = CrossEncoderReranker(model, backend="torch")
        # a first stage the pairs cannot fit keeps its calibration (the model is unchanged): until
        # session 48 `--data` naming document sets only dropped the skills calibration, silently
        calibration, report = fit_platt(pairs, reranker.logits_pairs, reranker.calibration)
        check_fitted(calibration, len(pairs), model, "the recalibration")
        snapshot = open_snapshot(model, family=FAMILY)
        manifest = snapshot.manifest
        # the bar the model was trained with, as averaging reads it
        bar = TrainParams.from_manifest(manifest.params).min_logit_auroc
        check_learned(report, model, "recalibrated", bar=bar)
        params = dict(manifest.params)
        params["report"] = {**params.get("report", {}), "calibration": {**calibration.to_dict(), **report}}
        with write_artifact(model, FAMILY, manifest.kind, name=manifest.name, params=params) as pending:
            for name in manifest.files:
                if name == CALIBRATION_FILE:
                    continue
                target = pending.path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(snapshot.file(name), target)
            (pending.path / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()), encoding="utf-8")
    return {**calibration.to_dict(), **report}

"""``ragroute expert ...``: train domain experts offline, and fit routers that choose among them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import CONTEXT, applicable, corpus_columns, counted, one_line_errors, refuse_options
from ragroute.cli.options import (
    CONFIG_CACHE_HELP,
    SEED,
    NamedPath,
    bench_encoder_options,
    cache_dir_option,
    column_options,
    engine_options,
    train_device_option,
)
from ragroute.cli.output import emit_json
from ragroute.errors import RagrouteError


@click.group("expert", context_settings=CONTEXT)
def expert_group() -> None:
    """Expert embedding models: train one per domain without labels, route queries among them.

    \b
    ragroute expert train corpora/med --out experts/med
    ragroute expert fit-router routing.yaml --kind pilot --out routers/med-pilot
    ragroute expert fit-router routing.yaml --kind domain --domain expert-med=corpora/med \\
        --domain expert-law=corpora/law --out routers/by-domain
    """


@expert_group.command("train")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Expert artifact to write (a new build, published atomically).",
)
@click.option(
    "--mode",
    type=click.Choice(["query-lora", "full"]),
    default="query-lora",
    show_default=True,
    help="query-lora: a query-side LoRA adapter that searches the base model's document index "
    "(no re-indexing); full: both towers fine-tuned (the expert needs its own index).",
)
@click.option(
    "--epochs", type=click.IntRange(1), default=2, show_default=True, help="Passes over the pseudo-queries."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Pseudo-queries per step (each batch's other passages are its in-batch negatives).",
)
@click.option(
    "--learning-rate",
    type=float,
    default=None,
    # until session 55 the help was the default alone, with no word of what the option sets
    help="Peak learning rate (AdamW, linear warm-up and decay) "
    "[default: 5e-4 for query-lora, 2e-5 for full].",
)
@click.option("--rank", type=click.IntRange(1), default=8, show_default=True, help="LoRA rank.")
@click.option(
    "--max-queries",
    type=click.IntRange(1),
    default=6000,
    show_default=True,
    help="Most pseudo-queries cut from the documents (title, a sentence, keyphrases: at most one "
    "of each per document).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads [default: all cores].")
@train_device_option("the published adapter or model")
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seeds the pseudo-queries cut, the negatives mined and the training order.",
)
@engine_options(
    "Where the base model encodes CORPUS for the training data (the document vectors positives and "
    "hard negatives come from): here, or in shards on Ray workers (extra ragroute[ray]); training runs here."
)
@bench_encoder_options
@column_options
@one_line_errors
def train_command(
    corpus: Path,
    out: Path,
    mode: str,
    epochs: int,
    batch_size: int,
    learning_rate: float | None,
    rank: int,
    max_queries: int,
    threads: int | None,
    device: str,
    seed: int,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    columns: dict[str, Any],
) -> None:
    """Fine-tune a domain expert from the base encoder on pseudo-queries cut from CORPUS (no labels).

    CORPUS is any corpus ragroute loads (a folder of files, JSONL, BEIR, ...). Document
    embeddings of the base model come from the embedding cache when present.
    """
    from ragroute.encode import load_encoder
    from ragroute.experts.pseudo_queries import cut_pseudo_queries
    from ragroute.experts.train import FAMILY, ExpertTrainParams, check_peft, train_expert
    from ragroute.loaders import load_corpus
    from ragroute.store import check_writable
    from ragroute.training import check_device

    if mode != "query-lora":  # until session 55 accepted, ignored and recorded in the manifest as used
        refuse_options(("rank",), f"to --mode {mode} (it is the rank of the query-lora adapter)")
    check_writable(out, FAMILY)  # before the corpus is loaded and encoded
    if mode == "query-lora":
        check_peft()
    documents = load_corpus(corpus, **corpus_columns(corpus, columns))
    cut_pseudo_queries(documents, max_queries=1)  # too small a corpus fails here, before encoding it
    params = ExpertTrainParams(
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        rank=rank,
        max_queries=max_queries,
        threads=threads,
        seed=seed,
        device=device,
    )
    check_device(device)  # before the corpus is encoded
    if engine == "local":
        refuse_options(("ray_address", "workers"), "to --engine local (they configure --engine ray)")
    base = load_encoder(encoder, backend=backend, cache_dir=cache_dir, threads=threads)
    texts = [d.full_text() for d in documents]
    if engine == "ray":
        import functools

        from ragroute.scale.ray_build import encode_on_ray

        factory = functools.partial(
            load_encoder, encoder, backend=base.backend, cache_dir=cache_dir, use_cache=False, threads=1
        )
        timings: dict[str, float] = {}
        vectors = encode_on_ray(
            texts, encoder=base, encoder_factory=factory, workers=workers, address=ray_address,
            timings=timings,
        )  # fmt: skip
        click.echo(
            f"ray: start-up {timings['startup_s']:.1f}s, workers {timings['workers_start_s']:.1f}s, "
            f"encoding {timings['build_s']:.1f}s",
            err=True,
        )
    else:
        vectors = base.encode_documents(texts)
    report = train_expert(
        documents, out, params, base=encoder, document_vectors=vectors, document_encoder=base.describe()
    )
    click.echo(
        f"expert {out}: {report['mode']}, "
        f"{counted(report['pseudo_queries'], 'pseudo-query', 'pseudo-queries')} "
        f"{report['pseudo_query_kinds']} from {counted(report['documents'], 'document')}, "
        f"trained in {report['train_s']} s (final loss {report['final_loss']})"
    )


@expert_group.command("fit-router")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(["pilot", "quality", "domain"]),
    default="pilot",
    show_default=True,
    help="pilot: pilot embeddings per expert; quality: predicted nDCG@10 per expert; domain: each "
    "domain expert's pilot is the centroid of its --domain corpus (no query needed; a pilot router).",
)
@click.option(
    "--domain",
    "domains",
    type=NamedPath(),
    multiple=True,
    metavar="EXPERT=CORPUS",
    help="With --kind domain (repeatable, at least two): an expert source of CONFIG and the corpus "
    "it was trained for.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Router folder to write."
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A BEIR folder with labelled queries over the experts' documents [default: pseudo-queries "
    "cut from the documents].",
)
@click.option("--split", default="dev", show_default=True, help="Qrels split of --data.")
@click.option("--clusters", type=click.IntRange(1), default=1, show_default=True, help="Pilots per expert.")
@click.option(
    "--mode",
    type=click.Choice(["nearest", "mean"]),
    default="nearest",
    show_default=True,
    help="pilot routers: route by the nearest pilot vector, or by the mean similarity per expert.",
)
@cache_dir_option(CONFIG_CACHE_HELP)
@column_options
@one_line_errors
def fit_router_command(
    config: Path,
    kind: str,
    out: Path,
    data: Path | None,
    split: str,
    clusters: int,
    mode: str,
    domains: tuple[str, ...],
    cache_dir: Path | None,
    columns: dict[str, Any],
) -> None:
    """Fit an expert router on the sources of a routing CONFIG (experts over the same documents).

    Each training query is searched by every expert; the nDCG@10 each reaches is what the
    router learns from. Use it in the config as ``router: {kind: pilot, model: OUT}``.

    With ``--kind domain`` no query is searched: each ``--domain EXPERT=CORPUS`` expert gets the
    centroid of its corpus's documents as its pilot, so a query goes to the expert of the domain
    it resembles most; sources without a domain (the base model, BM25) get no pilot: add them
    with ``always: [base, bm25]``. Its probabilities are calibrated on pseudo-queries cut from the
    same corpora. It is saved as a pilot router (``kind: pilot`` in the config). A --domain
    corpus is anything ``expert train`` reads; the column options apply to those that are .csv,
    .tsv or .jsonl tables.
    """
    from ragroute.context import query_vectors
    from ragroute.evaluation.metrics import is_scorable
    from ragroute.route.config import RoutingConfig, open_sources, warn_left_out, warn_other_documents
    from ragroute.route.expert_gains import ExpertGains, measure_gains

    reason = f"to --kind {kind} (it pairs experts with corpora for --kind domain)"
    domains = applicable("domains", domains, kind == "domain", reason) or ()
    data = applicable("data", data, kind != "domain", "to --kind domain (it fits on the --domain corpora)")
    if kind != "domain":
        refuse_options(tuple(columns), f"to --kind {kind} (they name the columns of --domain corpora)")
    if kind == "quality":  # fitted, then left out unsaid until session 37
        refuse_options(("clusters", "mode"), "to --kind quality (it predicts each expert's nDCG; no pilots)")
    if data is None:
        refuse_options(("split",), "without --data (pseudo-queries have no split)")
    routing = RoutingConfig.read(config)
    encoder = routing.load_encoder(cache_dir=cache_dir)
    sources, problems = open_sources(routing, encoder)
    warn_left_out(routing.path, problems)  # `warning: CONFIG: source 'x' left out: ...` on stderr
    warn_other_documents(routing.path, sources)  # experts that do not rank the same documents
    if len(sources) < 2:
        raise RagrouteError("an expert router needs at least two sources that open")
    if kind == "domain":
        _fit_domain_router([s.name for s in sources], domains, encoder, clusters, mode, out, columns)
        return
    contexts, qrels = _training_queries(sources, data, split)
    gains = measure_gains(sources, contexts, qrels)
    train = ExpertGains(
        [s.name for s in sources], [c.text for c in contexts], query_vectors(contexts, encoder), gains
    )
    if kind == "pilot":
        from ragroute.route.pilot import PilotRouter

        router: Any = PilotRouter.fit(train, encoder=encoder, mode=mode, clusters=clusters)
    else:
        from ragroute.route.expert_quality import QualityRouter

        router = QualityRouter.fit(train, encoder=encoder)
    router.save(out)
    wins = {name: 0 for name in train.labels}
    for winners in train.winners():
        for j in winners:
            wins[train.labels[j]] += 1
    # over the scored queries only: one judged with grade 0 only has no nDCG (every expert "scores" 0)
    scored = [is_scorable(qrels[c.id]) for c in contexts]
    means = {
        name: round(float(gains[scored, j].mean()), 4) if any(scored) else 0.0
        for j, name in enumerate(train.labels)
    }
    click.echo(f"{kind} router -> {out}: {counted(len(contexts), 'training query', 'training queries')}")
    emit_json({"mean_ndcg@10": means, "queries_won": wins})


def _fit_domain_router(
    labels: list[str],
    domains: tuple[str, ...],
    encoder: Any,
    clusters: int,
    mode: str,
    out: Path,
    columns: dict[str, Any] | None = None,
) -> None:
    """``--kind domain``: pilots from the documents of each ``EXPERT=CORPUS`` pair (the column
    options read the corpora that are tables; until session 36 none could be given, and a table
    whose text column is not ``text`` could not be read)."""
    from ragroute.loaders import load_corpus
    from ragroute.loaders.auto import LOADERS, detect_format
    from ragroute.route.pilot import PilotRouter

    pairs: dict[str, Path] = {}
    for item in domains:
        name, sep, corpus = item.partition("=")
        if not sep or not name or not corpus:
            raise RagrouteError(f"--domain {item!r}: expected EXPERT=CORPUS")
        if name not in labels:
            raise RagrouteError(f"--domain {name}: not a source of the config ({', '.join(labels)})")
        if name in pairs:
            raise RagrouteError(f"--domain {name} given twice")
        pairs[name] = Path(corpus)
    if len(pairs) < 2:
        raise RagrouteError("--kind domain needs --domain EXPERT=CORPUS for at least two experts")
    columns = columns or {}
    tables = {
        name
        for name, folder in pairs.items()
        if columns and set(columns) <= set(LOADERS[detect_format(folder)][1])
    }
    if columns and not tables:
        refuse_options(tuple(columns), "to these --domain corpora: none is a .csv, .tsv or .jsonl table")
    vectors, corpora = {}, {}
    for name, folder in pairs.items():
        corpora[name] = load_corpus(folder, **(columns if name in tables else {}))
        if not corpora[name]:
            raise RagrouteError(f"--domain {name}: {folder} holds no documents")
        vectors[name] = encoder.encode_documents([d.full_text() for d in corpora[name]])
    router = PilotRouter.from_domains(
        labels, vectors, encoder=encoder, mode=mode, clusters=clusters, documents=corpora
    )
    router.save(out)
    sizes = {name: len(v) for name, v in vectors.items()}
    click.echo(f"domain pilot router -> {out}: pilots from {counted(sum(sizes.values()), 'document')}")
    emit_json({"domain_documents": sizes, "temperature": round(router.temperature, 5)})


def _training_queries(sources: list[Any], data: Path | None, split: str) -> tuple[list[Any], dict]:
    """Labelled queries of ``data``, or pseudo-queries cut from the first source's documents."""
    from ragroute.context import QueryContext

    if data is not None:
        from ragroute.loaders import load_beir

        beir = load_beir(data, split=split)
        return [QueryContext(q.text, id=q.id) for q in beir.queries], beir.qrels
    from ragroute.experts.pseudo_queries import cut_pseudo_queries

    documents = list(sources[0].documents)
    if not documents:
        raise RagrouteError(f"source {sources[0].name} exposes no documents to cut pseudo-queries from")
    # the router's training queries, not an expert's ("an expert needs at least 50" until session 38)
    queries = cut_pseudo_queries(
        documents, max_queries=2000, purpose=f"fitting a router on {sources[0].name}'s pseudo-queries"
    )
    contexts = [QueryContext(q.text, id=f"pseudo-{i}") for i, q in enumerate(queries)]
    return contexts, {c.id: {q.doc_id: 1} for c, q in zip(contexts, queries)}

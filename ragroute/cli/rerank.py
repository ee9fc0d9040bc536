"""``ragroute rerank ...``: train a cross-encoder reranker here, offline, and try it on one query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import CONTEXT, counted, one_line_errors
from ragroute.cli.options import SEED, bench_encoder_options, split_option, text_argument, train_device_option
from ragroute.cli.output import report_text
from ragroute.errors import RagrouteError, check_query
from ragroute.rerank.cross_encoder import BACKENDS as RERANK_BACKENDS
from ragroute.rerank.train import LOSSES

DEFAULT_DATA = (
    "../shared/data/toollens",
    "../shared/data/metatool",
    "../shared/data/seal_tools",
    "../shared/data/glasgow",
    "../shared/data/musique",
)
#: sets whose held-apart calibration queries widen the calibration; never trained on
DEFAULT_CALIBRATION_DATA = ("../shared/data/tatqa",)


def _sets_option(flag: str, dest: str, help_text: str) -> Any:
    """A repeatable option naming labelled-set folders."""
    return click.option(flag, dest, multiple=True, type=click.Path(path_type=Path), help=help_text)


@click.group("rerank", context_settings=CONTEXT)
def rerank_group() -> None:
    """Cross-encoder rerankers: train one from the bundled MiniLM, score candidates with it."""


@rerank_group.command("train")
@_sets_option(
    "--data",
    "roots",
    "Labelled sets (BEIR or SKILLS folders, or a folder of BEIR collections, hidden `.`/`_` ones "
    "left out); repeatable "
    "[default: toollens, metatool, seal_tools, glasgow, musique under ../shared/data].",
)
@_sets_option(
    "--calibration-data",
    "calibration_roots",
    "Labelled sets never trained on whose held-apart tenth of fold 0 joins the calibration "
    "pairs only; repeatable [default: ../shared/data/tatqa when it exists].",
)
@click.option("--split", default="dev", show_default=True, help="Qrels split whose fold 0 is trained on.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("rerank/default"),
    show_default=True,
    help="Reranker artifact to write (a new build, published atomically).",
)
@click.option("--layers", type=click.IntRange(1, 6), default=6, show_default=True, help="MiniLM layers kept.")
@click.option(
    "--max-length", type=click.IntRange(16, 512), default=64, show_default=True, help="Tokens per pair."
)
@click.option(
    "--queries-per-set",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Most training queries drawn from each labelled set's fold 0.",
)
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True, help="Passes over the pairs.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Pairs per optimiser step (listwise, bce+listwise: whole queries holding about this many pairs).",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default="bce",
    show_default=True,
    help="bce: each pair scored on its own; listwise: each relevant candidate against its query's "
    "negatives (a softmax over the query's candidates); bce+listwise: their sum. The probability is "
    "calibrated whichever is trained.",
)
@click.option(
    "--learning-rate",
    type=float,
    default=5e-5,
    show_default=True,
    help="Peak learning rate (AdamW, linear warm-up and decay; docs/rerank.md says how it was chosen).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads [default: all cores].")
@train_device_option("the published model, its calibration and ONNX exports")
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seeds which queries, positives and negatives make the pairs (and the model's draw unless "
    "--draw is given).",
)
@click.option(
    "--draw",
    type=SEED,
    default=None,
    help="Seed of the model's own draw only (dropout masks, batch order) [default: --seed]. Draws "
    "of one --seed share their pairs, calibration queries and initial weights, so `ragroute rerank "
    "average` can average them into one model.",
)
@click.option(
    "--draws",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Train this many draws of the recipe on pairs built once (--draw values D, D+1, ...; D = "
    "--draw, else --seed), keep each in OUT.draws/, and publish their weights' average, calibrated "
    "afresh, at --out (what `ragroute rerank average` does with separately trained draws).",
)
@click.option(
    "--title-words/--no-title-words",
    default=True,
    show_default=True,
    help="Follow a one-word identifier title (getWeatherForecast) with its words in what the model "
    "reads; the reranker reads candidates the way it was trained.",
)
@click.option(
    "--compact-bodies/--no-compact-bodies",
    default=False,
    show_default=True,
    help="Read a skill's body without the name and description it repeats and without JSON quotes "
    "and brackets, so the token window reaches its parameters; the reranker reads candidates the "
    "way it was trained. Off by default: measured and not adopted (docs/rerank.md).",
)
@click.option(
    "--pseudo-queries",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also train on up to this many pseudo-queries per document set, cut from its own documents "
    "(a title, a sentence or keyphrases; no label is read), each with its document as the positive "
    "(read without the cut text) and stage-1 hard negatives; 0 = none. Measured and not adopted: "
    "such pairs did not teach the document side to rank real queries (docs/rerank.md).",
)
@bench_encoder_options
@one_line_errors
def train_command(
    roots: tuple[Path, ...],
    calibration_roots: tuple[Path, ...],
    split: str,
    out: Path,
    layers: int,
    max_length: int,
    queries_per_set: int,
    epochs: int,
    batch_size: int,
    loss: str,
    learning_rate: float,
    threads: int | None,
    device: str,
    seed: int,
    draw: int | None,
    draws: int,
    title_words: bool,
    compact_bodies: bool,
    pseudo_queries: int,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
) -> None:
    """Train a cross-encoder reranker on fold 0 of each labelled set's queries.

    Hard negatives come from the first stage the reranker follows when deployed (encoded
    with --encoder): the skill router's stage 1 for SKILLS sets, a hybrid index for BEIR
    sets; fold 1 of every set is never trained on and is what `ragroute bench
    rerank` and `ragroute bench skills` report. Writes the model, its Platt
    calibration and its ONNX fp32/int8 exports to --out, and prints the training report.
    """
    from ragroute.rerank.cross_encoder import FAMILY
    from ragroute.rerank.train import TrainParams, train_reranker
    from ragroute.store import check_writable
    from ragroute.training import check_device

    check_writable(out, FAMILY)  # before minutes of loading and training, not after
    if draws > 1:  # and where each draw is kept (until session 44 refused after the first draw trained)
        from ragroute.rerank.average import draws_folder

        first = draw if draw is not None else seed
        for position in range(draws):
            check_writable(draws_folder(out) / f"draw-{first + position}", FAMILY)
    check_device(device)  # likewise: before the training pairs are mined
    params = TrainParams(
        layers=layers,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        learning_rate=learning_rate,
        queries_per_set=queries_per_set,
        seed=seed,
        draw=draw,
        threads=threads,
        device=device,
        title_words=title_words,
        compact_bodies=compact_bodies,
        pseudo_queries=pseudo_queries,
    )
    chosen = [Path(r) for r in (roots or DEFAULT_DATA)]
    extra = calibration_only_roots(chosen, calibration_roots, say=lambda line: click.echo(line, err=True))
    pairs = _pairs(chosen + extra, split, params, encoder, backend, cache_dir, calibration_only=extra)
    click.echo(
        f"{counted(len(pairs.train), 'training pair')}, "
        f"{counted(len(pairs.calibration), 'calibration pair')}",
        err=True,
    )
    data = {"roots": [str(r) for r in chosen], "calibration_roots": [str(r) for r in extra], "split": split}
    if draws > 1:
        from ragroute.rerank.average import train_draws

        report = train_draws(
            pairs, out, params, draws, name=out.name, data=data, say=lambda line: click.echo(line, err=True)
        )
    else:
        report = train_reranker(pairs, out, params, name=out.name, data=data)
    click.echo(report_text(report))


@rerank_group.command("score")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("query", callback=text_argument)
@click.argument("texts", nargs=-1, required=True, callback=text_argument)
@click.option(
    "--backend",
    type=click.Choice(list(RERANK_BACKENDS)),
    default="auto",
    show_default=True,
    help="How the reranker runs: auto = bf16 torch on CPUs with AMX, else the artifact's int8 ONNX "
    "export when it has one, else bf16 torch where bfloat16 is native, else fp32 torch (any other "
    "CrossEncoder folder runs in torch only).",
)
@one_line_errors
def score_command(model: Path, query: str, texts: tuple[str, ...], backend: str) -> None:
    """Print each TEXT's probability of being relevant to QUERY, best first: calibrated for a
    `rerank train` artifact; for any other CrossEncoder the sigmoid of its logit, an order rather
    than a probability (said in a note on stderr)."""
    from ragroute.rerank.cross_encoder import CrossEncoderReranker

    query = check_query(query)  # before the model loads, as every command refuses an empty query
    for position, text in enumerate(texts, 1):  # an empty TEXT was scored until session 50
        check_query(text, f"TEXT {position}")
    reranker = CrossEncoderReranker(model, backend=backend)
    for prob, text in sorted(zip(reranker.score(query, list(texts)), texts), key=lambda p: -p[0]):
        click.echo(f"{prob:.4f}  {text}")
    if not reranker.calibration.fitted:  # until session 44 printed as if calibrated
        click.echo(
            f"note: {model} has no fitted calibration: these are the sigmoid of its logits, an order "
            "rather than probabilities of relevance",
            err=True,
        )


@rerank_group.command("calibrate")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=Path("rerank/default"),
    show_default=True,
    help="Reranker artifact whose calibration is refitted (published as a new build).",
)
@_sets_option(
    "--data",
    "roots",
    "Labelled sets whose calibration pairs are used [default: the ones the model was trained "
    "and calibrated on, from its manifest; pairs are always drawn as training drew them].",
)
@split_option("Qrels split whose held-apart calibration queries are read.")
@bench_encoder_options
@one_line_errors
def calibrate_command(
    model: Path, roots: tuple[Path, ...], split: str, encoder: str, backend: str, cache_dir: Path | None
) -> None:
    """Refit a trained reranker's calibration on its held-apart calibration queries (the tenth of
    fold 0 kept out of training, as `rerank train` chose them), scoring each query's whole stage-1
    pool as the reranker sees it at query time. The model itself is unchanged.
    """
    from ragroute.rerank.train import recalibrate
    from ragroute.store import artifact_lock, open_snapshot

    # pairs drawn from the manifest of the build they recalibrate (read apart until session 41)
    with artifact_lock(model):
        params_in = open_snapshot(model, family="reranker").manifest.params
        calibration = _calibration_pairs(params_in, roots, split, encoder, backend, cache_dir)
        report = recalibrate(model, calibration)
    click.echo(report_text(report))


@rerank_group.command("average")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Reranker artifact to write (a new build, published atomically).",
)
@split_option("Qrels split whose held-apart calibration queries calibrate the average.")
@bench_encoder_options
@one_line_errors
def average_command(
    models: tuple[Path, ...], out: Path, split: str, encoder: str, backend: str, cache_dir: Path | None
) -> None:
    """Average the weights of MODELS, draws of one recipe (`rerank train --seed S --draw D` with
    one S and several D), into one reranker as fast as each of them, calibrate it on the
    held-apart queries none of them trained on, and publish it at --out with its ONNX exports.

    One training draw moves the reranker's Hit@1 by several points on small sets; what an
    average of draws does is measured in docs/rerank.md#averaged-draws.
    """
    from ragroute.rerank.average import average_rerankers, check_draws
    from ragroute.rerank.cross_encoder import FAMILY
    from ragroute.store import check_writable, open_snapshot

    manifests = [open_snapshot(m, family="reranker").manifest.params for m in models]
    check_draws([(str(m), params) for m, params in zip(models, manifests)])  # before any pair is built
    # likewise --out: until session 44 one that cannot take a reranker was refused only at the
    # end, after minutes of building the calibration pairs
    check_writable(out, FAMILY)
    calibration = _calibration_pairs(manifests[0], (), split, encoder, backend, cache_dir)
    click.echo(report_text(average_rerankers(list(models), out, calibration, name=out.name)))


def _calibration_pairs(
    params_in: Mapping[str, Any],
    roots: Sequence[Path],
    split: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
) -> list[Any]:
    """The calibration pairs of a trained reranker (manifest ``params_in``): the held-apart tenth
    of fold 0 of ``roots`` (default: the sets it was trained and calibrated on), drawn exactly
    as its training drew them."""
    from ragroute.rerank.train import TrainParams, calibration_pairs, calibration_sets

    params = TrainParams.from_manifest(params_in)
    trained, chosen = calibration_sets(params_in.get("data", {}), roots, DEFAULT_DATA)
    absent = [str(r) for r in trained if not Path(r).exists()]
    if absent:  # needed even with --data: they fix which queries training held apart
        raise RagrouteError(
            f"the sets this reranker was trained on are not found from here ({', '.join(absent)}, as "
            "recorded relative to where it was trained): run from that folder; they decide which "
            "queries training held apart, so they are read even when --data names others"
        )
    calibration = calibration_pairs(
        trained,
        chosen,
        lambda chosen: _pairs(chosen, split, params, encoder, backend, cache_dir),
    )
    click.echo(counted(len(calibration), "calibration pair"), err=True)
    return calibration


def calibration_only_roots(
    chosen: Sequence[Path], given: Sequence[Path], *, say: Any = lambda _: None
) -> list[Path]:
    """The calibration-only sets: ``given`` (a missing one is an error later, as for ``--data``),
    else the defaults that exist here (a missing default is skipped, said in one line); sets
    that are also trained on are left out."""
    known = {Path(r).resolve() for r in chosen}
    if given:
        candidates = [Path(r) for r in given]
    else:
        candidates = [Path(r) for r in DEFAULT_CALIBRATION_DATA if Path(r).exists()]
        for missing in (r for r in DEFAULT_CALIBRATION_DATA if not Path(r).exists()):
            say(f"calibration-only set {missing} not found: calibrating on the training sets' pools only")
    return [r for r in candidates if r.resolve() not in known]


def _pairs(
    roots: list[Path],
    split: str,
    params: Any,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    *,
    calibration_only: Sequence[Path] = (),
) -> Any:
    """Training and calibration pairs from the labelled sets under ``roots`` (hard negatives from
    hybrid retrieval with ``encoder``; the sets under ``calibration_only`` give calibration pairs
    only); one line naming the folders that are missing."""
    from ragroute.encode import load_encoder
    from ragroute.rerank.train import build_pairs, expand_roots, load_labelled_set

    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise RagrouteError(f"data missing: {', '.join(missing)} (see ../shared/data/README.md)")
    sets = [load_labelled_set(path, split, name) for name, path in expand_roots(roots)]
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    held = {name for name, _ in expand_roots(list(calibration_only))}
    return build_pairs(sets, enc, params, calibration_only=held, say=lambda line: click.echo(line, err=True))

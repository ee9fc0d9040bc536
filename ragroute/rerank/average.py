"""Average several training draws of one reranker recipe into one model (a "model soup").

One training draw of the reranker recipe moves fold-1 Hit@1 by several points on small sets
(docs/rerank.md): which dropout masks and batch order a run drew matters as much as most recipe
changes. Draws trained with one ``--seed`` and different ``--draw`` (``ragroute rerank train
--seed S --draw D``) fine-tune the same start (the new head's initial weights included) on the
same pairs, so their weights can be averaged into one model that scores as fast as each of them; the average
is then calibrated afresh on the held-apart calibration queries that none of the draws trained
on, and published as a reranker artifact like any other (ONNX exports included).

:func:`check_draws` refuses members that are not draws of one recipe (any setting other than
``draw`` and ``threads`` differs, the same draw twice, or a member that is itself an average),
naming what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.rerank.cross_encoder import FAMILY
from ragroute.rerank.train import (
    Pair,
    TrainParams,
    check_fitted,
    check_learned,
    fit_calibration,
    publish_reranker,
)

#: train settings that may differ between draws of one recipe
# the bar to publish and where the draw ran are not the recipe
DRAW_SETTINGS = ("draw", "threads", "device", "min_logit_auroc")
#: manifest entries that are each draw's own
OWN_ENTRIES = ("report", "average")
#: recipe settings a manifest may predate, as the models trained before them were trained
RECIPE_BEFORE = {"loss": "bce"}


def _recipe(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trained reranker's settings that draws of one recipe share, flattened (``train.seed``)."""
    recipe = {k: v for k, v in params.items() if k not in (*OWN_ENTRIES, "train")}
    train = {**RECIPE_BEFORE, **params.get("train", {})}
    recipe.update({f"train.{k}": v for k, v in train.items() if k not in DRAW_SETTINGS})
    return recipe


def check_draws(members: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
    """The draws of ``members`` (``(label, manifest params)``), or a one-line error saying why they
    cannot be averaged."""
    if len(members) < 2:
        raise RagrouteError("averaging needs at least two rerankers (draws of one recipe)")
    for label, params in members:
        if "average" in params:
            raise RagrouteError(f"{label} is itself an average of draws: average the draws it was made from")
        if "train" not in params:
            raise RagrouteError(
                f"{label} was not trained by `ragroute rerank train`: it has no recipe to compare"
            )
    first_label, first = members[0]
    reference = _recipe(first)
    for label, params in members[1:]:
        recipe = _recipe(params)
        differing = sorted(k for k in set(reference) | set(recipe) if reference.get(k) != recipe.get(k))
        if differing:
            raise RagrouteError(
                f"{label} is not a draw of {first_label}'s recipe: {', '.join(differing)} differ "
                "(train draws with one --seed and different --draw)"
            )
    draws = [TrainParams.from_manifest(params).model_seed for _, params in members]
    repeated = sorted({d for d in draws if draws.count(d) > 1})
    if repeated:
        raise RagrouteError(f"the same draw is given more than once: draw {', '.join(map(str, repeated))}")
    return draws


def average_rerankers(
    models: Sequence[Path], out: Path, calibration: Sequence[Pair], *, name: str = ""
) -> dict[str, Any]:
    """Average the reranker artifacts ``models`` (draws of one recipe, see :func:`check_draws`),
    calibrate the average on ``calibration`` (the held-apart pairs of the recipe's seed, as
    ``ragroute rerank calibrate`` draws them) and publish it at ``out``; returns its report."""
    from sentence_transformers import CrossEncoder

    from ragroute.encode.resolve import set_offline_env
    from ragroute.store import read_artifact
    from ragroute.training import average_weights

    set_offline_env()
    loaded: list[tuple[Any, Mapping[str, Any], str]] = []
    for model in models:

        def read(snapshot: Any, model: Path = model) -> tuple[Any, Mapping[str, Any], str]:
            params = snapshot.manifest.params
            encoder = CrossEncoder(
                str(snapshot.path),
                max_length=int(params.get("max_length") or 64),
                local_files_only=True,
                device="cpu",
            )
            return encoder, params, snapshot.manifest.build

        loaded.append(read_artifact(model, read, family=FAMILY))
    draws = check_draws([(str(m), params) for m, (_, params, _) in zip(models, loaded)])
    soup = loaded[0][0]
    soup.model.load_state_dict(average_weights([encoder.model for encoder, _, _ in loaded]))
    soup.model.eval()
    first = loaded[0][1]
    recipe = TrainParams.from_manifest(first)
    fitted, calibration_report = fit_calibration(soup, calibration, recipe)
    check_fitted(fitted, len(calibration), out, f"the average of {len(models)} draws")
    check_learned(calibration_report, out, f"the average of {len(models)} draws", bar=recipe.min_logit_auroc)
    report: dict[str, Any] = {
        "members": [
            {
                "path": str(m),
                "build": build,
                "draw": d,
                "final_loss": params_.get("report", {}).get("final_loss"),
            }
            for m, (_, params_, build), d in zip(models, loaded, draws)
        ],
        "sets": first.get("report", {}).get("sets", {}),  # the members' pairs: one recipe, one seed
        "calibration_pairs": len(calibration),
        "calibration": {**fitted.to_dict(), **calibration_report},
    }
    manifest_params = {
        **{k: v for k, v in first.items() if k != "report"},
        "train": {**first["train"], "draw": None},
        "average": {"draws": draws},
        "report": report,
    }
    report["onnx"] = publish_reranker(soup, fitted, out, manifest_params, name=name)
    return report


def draws_folder(out: Path) -> Path:
    """Where ``ragroute rerank train --draws N --out OUT`` keeps its members: ``OUT.draws/`` beside
    ``OUT`` (each draw a reranker artifact ``OUT.draws/draw-D`` of its own, benchable alone)."""
    out = Path(out)
    return out.with_name(out.name + ".draws")


def train_draws(
    pairs: Any,
    out: Path,
    params: TrainParams,
    draws: int,
    *,
    name: str = "",
    data: Mapping[str, Any] | None = None,
    say: Any = lambda _line: None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``draws`` draws of one recipe on the same ``pairs`` (built once) and publish their
    average at ``out``: draws ``params.model_seed``, ``+1``, ... (``--draw`` values), each kept as a
    reranker artifact in :func:`draws_folder`; the average is calibrated on ``pairs.calibration``, the
    held-apart pairs none of them trained on. Returns ``{"draws": [...], "average": report}``."""
    from dataclasses import replace

    from ragroute.rerank.train import train_reranker

    if draws < 2:
        raise RagrouteError("--draws averages several draws: give 2 or more (or leave it out for one)")
    folder = draws_folder(out)
    members, reports = [], []
    for position in range(draws):
        draw = params.model_seed + position
        member = folder / f"draw-{draw}"
        say(f"draw {position + 1} of {draws} (--draw {draw}) -> {member}")
        reports.append(
            train_reranker(
                pairs,
                member,
                replace(params, draw=draw),
                name=f"{name or Path(out).name}-draw-{draw}",
                data=data,
                show_progress=show_progress,
            )
        )
        members.append(member)
    say(f"averaging {draws} draws -> {out}")
    return {"draws": reports, "average": average_rerankers(members, out, pairs.calibration, name=name)}

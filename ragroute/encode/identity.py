"""Which encoder an artifact was made with, and the check that a given encoder is that one.

An artifact that holds vectors, or learned from them (an index, a skill index, a trained router
or gate), records its encoder's model id, its dimension and, for encoders loaded from a model
folder, a digest of that folder's contents (``weights``). The same name with other contents (a
local model folder retrained or edited in place, a hub snapshot replaced) embeds into another
space, and an index searched with it would rank silently wrong; the digest makes that an
:class:`~ragroute.errors.EncoderMismatchError`. Artifacts written before the digest was recorded,
and encoders that have none (in-memory or test encoders), are checked by id and dimension only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragroute.errors import EncoderMismatchError


def weights_of(encoder: Any) -> str | None:
    """The content digest of ``encoder``'s model folder, or None when it has none to give."""
    describe = getattr(encoder, "describe", None)
    if describe is None:
        return None
    value = describe().get("weights")
    return str(value) if value else None


def encoder_record(encoder: Any) -> dict[str, Any] | None:
    """What a fitted artifact records about ``encoder``: model id, dimension, weights digest."""
    if encoder is None:
        return None
    record: dict[str, Any] = {"model_id": str(encoder.model_id), "dim": int(encoder.dim)}
    weights = weights_of(encoder)
    if weights:
        record["weights"] = weights
    return record


def same_model(
    recorded: Mapping[str, Any] | None, model_id: str, dim: int | None, encoder: Any = None
) -> bool:
    """Whether an artifact that recorded ``recorded`` (model id, dimension, weights) was made with
    the model ``model_id`` (of dimension ``dim`` when known; ``encoder`` gives its weights): the
    same id, or a byte-identical copy of its model folder under another path or name (the same
    weights digest: until session 39 a copy of the bundled model was "another encoder"). The
    dimension must match either way; :func:`check_weights` then refuses the same id with other files."""
    record = recorded or {}
    if dim is not None and int(record.get("dim", -1)) != dim:
        return False
    if record.get("model_id") == model_id:
        return True
    weights = record.get("weights")
    return bool(weights) and encoder is not None and weights_of(encoder) == weights


def check_weights(recorded: Mapping[str, Any] | None, encoder: Any, what: str) -> None:
    """:class:`EncoderMismatchError` when ``recorded`` and ``encoder`` both carry a weights digest
    and the two differ (``what`` names the artifact, e.g. "index /x" or "router /y")."""
    record = recorded or {}
    before = record.get("weights")
    if not before:
        return
    now = weights_of(encoder)
    if now and now != before:
        raise EncoderMismatchError(
            f"{what} was built with encoder {record.get('model_id')!r} (weights {before}), whose "
            f"files have changed since (weights now {now}): rebuild it, or restore the model folder"
        )


def check_fitted_encoder(what: str, info: Mapping[str, Any] | None, encoder: Any) -> None:
    """The encoder check of a fitted router or gate (``what``: "router /x", "gate /y", "pilot router
    /z"): ``encoder`` must be the one recorded in ``info`` (id, dimension, weights); no record:
    nothing to check. The message names both encoders and what to do."""
    if not info:
        return
    if encoder is None:
        raise EncoderMismatchError(f"{what} was fitted with encoder {info['model_id']}: pass that encoder")
    got = (str(getattr(encoder, "model_id", "?")), int(getattr(encoder, "dim", -1)))
    if not same_model(info, got[0], got[1], encoder):
        raise EncoderMismatchError(
            f"{what} was fitted with encoder {info['model_id']} ({info['dim']}-d), not {got[0]} "
            f"({got[1]}-d): use that encoder, or refit it with this one"
        )
    check_weights(info, encoder, what)

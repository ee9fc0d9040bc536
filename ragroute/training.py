"""The fine-tuning loop shared by the models ragroute trains here (rerankers, domain experts, the
gates' tuned probes).

AdamW (weight decay 0.01), linear warm-up over a fraction of the steps then linear decay, gradients
clipped at norm 1, each epoch's items shuffled by ``seed + epoch``; a progress bar on a terminal (see
:mod:`ragroute.progress`). The caller supplies the loss of one batch of item positions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError, check_k, first_line, is_finite_number


def shuffled_batches(n: int, size: int, seed: int) -> list[list[int]]:
    """Positions ``0..n-1`` in a seeded random order, cut into batches of ``size``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + size] for i in range(0, n, size)]


def check_learning_rate(learning_rate: Any) -> float:
    """``learning_rate`` as a float when it is a finite number >= 0 (Python's or numpy's; 0 trains
    nothing: the starting weights, as a test of the draws uses); else one :class:`RagrouteError`
    line (checked before any data or model loads by the trainers' parameter classes)."""
    if not is_finite_number(learning_rate) or learning_rate < 0:
        raise RagrouteError(f"learning rate must be a finite number >= 0, got {learning_rate!r}")
    return float(learning_rate)


def check_training_settings(
    params: Any,
    where: str,
    *,
    counts: Sequence[str] = (),
    shares: Sequence[str] = (),
    above_zero: Sequence[str] = (),
) -> None:
    """Check a trainer's parameters (a dataclass: reranker, expert, tuned probe) before any data or
    model loads, each refusal one :class:`RagrouteError` line naming ``where`` and the setting, and
    store each checked value as a plain ``int`` or ``float`` (a numpy number would not write into the
    manifest's JSON): ``counts`` whole numbers >= 1, ``shares`` finite numbers in [0, 1],
    ``above_zero`` finite numbers above 0, ``learning_rate`` (when the class has one that is not
    None) by :func:`check_learning_rate`, and ``threads`` (likewise) a whole number >= 1. Until
    session 49 each class checked its own subset: a batch size of 0 failed after the pairs were
    mined with a bare ZeroDivisionError, a NaN warm-up deep inside the scheduler, a count of 2.5
    trained with 2. Until session 52 threads went unchecked: 0 ran on every core, -1 failed inside
    torch after the pairs were mined or the corpus encoded, 2.5 trained an expert on 2."""
    for name in counts:
        _store(params, name, check_k(getattr(params, name), f"{where}: {name}"))
    for name in shares:
        value = getattr(params, name)
        if not is_finite_number(value) or not 0 <= value <= 1:
            raise RagrouteError(f"{where}: {name} must be a share between 0 and 1, got {value!r}")
        _store(params, name, float(value))
    for name in above_zero:
        value = getattr(params, name)
        if not is_finite_number(value) or value <= 0:
            raise RagrouteError(f"{where}: {name} must be a number above 0, got {value!r}")
        _store(params, name, float(value))
    if getattr(params, "learning_rate", None) is not None:
        _store(params, "learning_rate", check_learning_rate(params.learning_rate))
    if getattr(params, "threads", None) is not None:
        _store(params, "threads", check_k(params.threads, f"{where}: threads"))


def _store(params: Any, name: str, value: Any) -> None:
    """Set ``params.name`` (a frozen dataclass's too, as its ``__post_init__`` may)."""
    object.__setattr__(params, name, value)


def fine_tune(
    trainable: Sequence[Any],
    n_items: int,
    batch_loss: Callable[[list[int]], Any],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    warmup: float,
    seed: int,
    desc: str,
    show_progress: bool | None = None,
) -> list[float]:
    """Run ``epochs`` over ``n_items`` items in shuffled batches; ``batch_loss(positions)`` returns the
    batch's loss tensor; the learning rate warms up over ``warmup`` (a fraction) of all steps.
    Returns every step's loss. A loss that turns NaN or infinite stops training with one
    :class:`RagrouteError` line (the caller publishes nothing): a diverged model would still
    encode, and every similarity it gave would be NaN."""
    import torch
    from tqdm.auto import tqdm

    from ragroute.progress import progress_enabled

    check_learning_rate(learning_rate)
    trainable = list(trainable)
    steps = epochs * ((n_items + batch_size - 1) // batch_size)
    warmup_steps = max(1, int(steps * warmup))
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup_steps, max(0.0, (steps - s) / max(1, steps - warmup_steps)))
    )
    losses: list[float] = []
    bar = tqdm(total=steps, desc=desc, unit="batch", disable=not progress_enabled(show_progress))
    for epoch in range(epochs):
        for batch in shuffled_batches(n_items, batch_size, seed + epoch):
            loss = batch_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                bar.close()
                raise RagrouteError(
                    f"{desc}: the loss became {losses[-1]} at step {len(losses)} of {steps} (training "
                    f"diverged at learning rate {learning_rate:g}: lower it); nothing was published"
                )
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    return losses


def average_weights(modules: Sequence[Any]) -> dict[str, Any]:
    """The mean of the floating-point weights of torch ``modules`` of one architecture (a "model
    soup": the modules should be fine-tuned from one initialisation with the same settings); other
    entries (integer buffers such as position ids) are taken from the first module."""
    import torch

    states = [m.state_dict() for m in modules]
    if not states:
        raise ValueError("averaging needs at least one model")
    with torch.no_grad():
        return {
            name: torch.stack([state[name] for state in states]).mean(dim=0)
            if tensor.is_floating_point()
            else tensor
            for name, tensor in states[0].items()
        }


def check_device(device: str, fix: str = "use --device cpu") -> None:
    """A one-line error unless torch can place tensors on ``device`` here (checked before any work);
    ``fix`` ends it with what the user can change."""
    import torch

    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        why = first_line(exc)
        raise RagrouteError(f"cannot train on device {device!r} here ({why}); {fix}") from None


def model_inputs(model: Any, texts: list[str]) -> dict[str, Any]:
    """A sentence-transformers model's inputs for ``texts`` (``preprocess`` in sentence-transformers
    >= 5, ``tokenize`` before), on the model's device, for a forward pass in a training step."""
    method = getattr(model, "preprocess", None) or model.tokenize
    return {k: v.to(model.device) if hasattr(v, "to") else v for k, v in method(texts).items()}

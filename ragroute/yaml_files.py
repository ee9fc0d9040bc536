"""Reading the YAML files users write (configs, corpus definitions), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ragroute.errors import RagrouteError


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse ``path`` safely; an unreadable or invalid file raises a one-line :class:`RagrouteError`.

    ``what`` names the file's role in the message (e.g. ``"routing config"``).
    """
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RagrouteError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RagrouteError(f"{what} {path} is not UTF-8 ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise RagrouteError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None

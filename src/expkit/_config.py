"""YAML configuration files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["load_config"]


def load_config(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file gives ``{}``."""
    import yaml  # keep import expkit light

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except OSError as error:
        raise ConfigError(path, error.strerror or str(error)) from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(path, f"invalid YAML: {problem}", line) from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(path, f"the top level must be a mapping, not {type(config).__name__}", 1)
    return config

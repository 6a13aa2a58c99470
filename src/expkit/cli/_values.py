"""``--set KEY.PATH=VALUE`` and ``-p STEP.KEY=VALUE``: values typed as YAML reads them.

``1`` is an int, ``0.5`` a float, ``true`` a bool, ``[1, 2]`` a list,
``null`` (or nothing) is ``None``, anything else a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._common import UsageError

__all__ = ["apply_overrides", "parse_overrides", "parse_params", "yaml_value"]

# A step, or a step instance such as bench[rate=10], then .KEY=VALUE.
_PARAM = re.compile(
    r"(?P<step>[^.\[\]=]+(?:\[[^\]]*\])?)\.(?P<key>[A-Za-z_]\w*)=(?P<value>.*)", re.DOTALL
)


def yaml_value(text: str, where: str) -> Any:
    """``text`` read as a YAML value."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(f"{where}: the value {text!r} is not valid YAML ({problem})") from None


def parse_params(given: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-p STEP.KEY=VALUE`` options as ``make(params=...)`` takes them."""
    params: dict[str, dict[str, Any]] = {}
    for item in given:
        match = _PARAM.fullmatch(item)
        if match is None:
            raise UsageError(
                f"-p {item}: expected STEP.KEY=VALUE (as in -p bench.rate=10, "
                "or -p 'bench[seed=0].rate=10' for one instance of a sweep)"
            )
        step, key = match["step"].strip(), match["key"]
        params.setdefault(step, {})[key] = yaml_value(match["value"], f"-p {item}")
    return params


def parse_overrides(given: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``--set a.b=1`` options as (path, value) pairs."""
    found = []
    for item in given:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(part.strip() for part in path):
            raise UsageError(
                f"--set {item}: expected KEY.PATH=VALUE, a dotted path of non-empty keys "
                "(as in --set bench.rate=10)"
            )
        found.append(([part.strip() for part in path], yaml_value(raw, f"--set {item}")))
    return found


def apply_overrides(
    config: Mapping[str, Any], overrides: Sequence[tuple[list[str], Any]]
) -> dict[str, Any]:
    """A copy of ``config`` with each override set; missing keys are added."""
    result = _copy(config)
    for path, value in overrides:
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise UsageError(
                    f"--set {'.'.join(path)}: {where} is {child!r} "
                    f"(type {type(child).__name__}), not a mapping that could hold "
                    f"{'.'.join(path[depth + 1 :])!r}"
                )
            node = child
        node[path[-1]] = value
    return result


def _copy(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in config.items()}

"""Model options, declared once in each manifest (`model.options.<name>`: default, type, allowed
values, bounds, help) and checked here generically, before any work starts.

A value arrives either as the text of `--option KEY=VALUE` (the CLI keeps the raw text) or as a
Python value (the isolate child's JSON, tests, benchmarks). Text is converted by the declared
type, never by a YAML parser: `--option upsample=!!python/object/apply:os.system` is just a string
that is not one of the allowed values."""
from __future__ import annotations

import re

from zoo.errors import ZooError

TYPES = ("bool", "int", "str", "choice")
_BOOL_TEXT = {"true": True, "false": False}


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(a, b) -> bool:
    """Equal and of the same type (True is not 1, 1 is not '1')."""
    return type(a) is type(b) and a == b


def coerce(model: str, name: str, spec: dict, value):
    """The checked value of option `name`, or a one-line ZooError naming the option, the value
    and what is allowed."""
    kind = spec["type"]
    where = f"{model}: option {name}"
    if kind == "choice":
        for c in spec["choices"]:
            if _same(value, c) or (isinstance(value, str) and value.strip().lower() == _show(c).lower()):
                return c
        raise ZooError(f"{where} must be one of {', '.join(_show(c) for c in spec['choices'])}, got {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise ZooError(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ZooError(f"{where} must be an integer, got {value!r}")
        lo, hi = spec.get("min"), spec.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
            raise ZooError(f"{where} must be {bounds}, got {value}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ZooError(f"{where} must be a string, got {value!r}")
        if "\0" in value or any(ord(ch) < 32 for ch in value):
            raise ZooError(f"{where} must not contain control characters, got {value!r}")
        if spec.get("pattern") and not re.fullmatch(spec["pattern"], value):
            raise ZooError(f"{where} must match {spec['pattern']} ({spec.get('help', '').strip() or 'see the manifest'}), "
                           f"got {value!r}")
        return value
    raise ZooError(f"{where}: unknown option type {kind!r} in the manifest (one of {', '.join(TYPES)})")


def defaults(declared: dict) -> dict:
    return {k: spec["default"] for k, spec in declared.items()}


def resolve_options(model: str, declared: dict, given: dict) -> dict:
    """Defaults overlaid with the given values, every one checked (unknown names refused)."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ZooError(f"{model}: unknown model option(s) {', '.join(unknown)} (known: {', '.join(sorted(declared)) or 'none'})")
    out = {}
    for name, spec in declared.items():
        value = given.get(name)
        out[name] = coerce(model, name, spec, spec["default"] if value is None else value)
    return out


def describe(declared: dict) -> list[str]:
    """One line per option, for `python -m zoo models --options`/help texts."""
    lines = []
    for name, spec in declared.items():
        allowed = (" | ".join(_show(c) for c in spec["choices"]) if spec["type"] == "choice" else spec["type"])
        lines.append(f"{name}={_show(spec['default'])}  ({allowed})  {' '.join(spec.get('help', '').split())}".rstrip())
    return lines

"""Validation of result records against schema/result.schema.json (JSON Schema 2020-12), then
against the record checker's consistency rules (zoo.checks: a figure that is not the number the
record's other figures make).

Used twice: by `zoo run` before it writes a record, and by the host runner on every record it
collects. Model manifests are checked here too (validate_manifest, schema/model.schema.json: an
unknown key is one line naming it and the keys allowed). Depends only on jsonschema (no torch),
so the host environment can import it."""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache

import jsonschema

from zoo import checks
from zoo.errors import closest
from zoo.paths import SCHEMA_DIR


class SchemaError(ValueError):
    """A record that does not match the schema; the message is one line."""


@lru_cache(maxsize=None)
def validator(name: str = "result.schema.json") -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def first_nonfinite(obj, path: str = "") -> str | None:
    """The JSON path of the first NaN or infinite number in obj, or None: such a value has no
    JSON spelling (json.dumps would write a bare NaN that strict parsers reject)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "(root)"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_nonfinite(v, f"{path}/{k}" if path else str(k))
        if found:
            return found
    return None


def finite_or_none(obj):
    """obj with every NaN/infinite float replaced by None (JSON null): for derived figures (a ratio
    over a zero) in reports, where null means "not defined" (result records refuse them instead)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def validate(record: dict, origin: str = "<record>", name: str = "result.schema.json",
             rules=checks.GROUPS) -> dict:
    """Raise SchemaError naming the first violation (JSON path and message); return the record.
    A non-finite number is a violation too (strict JSON). A result record must then keep every
    consistency rule of `rules` (zoo.checks groups; `zoo score` recomputes the accuracy instead
    of trusting its rules)."""
    bad = first_nonfinite(record)
    if bad:
        raise SchemaError(f"{origin}: not strict JSON: a non-finite number (NaN/Infinity) at {bad}")
    errors = sorted(validator(name).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(f"{origin}: does not match {name} at {where}: {' '.join(e.message.split())[:300]}{more}")
    if name == "result.schema.json":
        check(record, origin, rules)
    return record


def unknown_key(error: jsonschema.ValidationError) -> str | None:
    """For an additionalProperties error (a closed object with a key the schema does not declare):
    'benchmark: unknown key 'warmpu' (allowed: batch_sizes)', the key path dotted as in the YAML,
    with a did-you-mean when a declared key is close; None for any other error."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return None
    declared = list(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    extra = [k for k in error.instance if k not in declared and not any(re.search(p, k) for p in patterns)]
    if not extra:
        return None
    key = str(extra[0])
    where = ".".join(map(str, error.absolute_path))
    allowed = ", ".join(declared + [f"/{p}/" for p in patterns]) or "none"
    close = closest(key, declared)
    hint = f"; did you mean {close!r}?" if close else ""
    more = f" (and {', '.join(map(repr, extra[1:]))})" if len(extra) > 1 else ""
    what = f"{where}: unknown key" if where else "unknown top-level key"
    return f"{what} {key!r}{more} (allowed: {allowed}){hint}"


def validate_manifest(data, origin: str = "<manifest>") -> dict:
    """Check a model manifest (models/<name>/model.yaml) against schema/model.schema.json: raise
    SchemaError with one line naming `origin` and the first problem, an unknown key first (a
    misspelt key also leaves its required one missing: the unknown key says which),
    '<origin>: benchmark: unknown key 'warmpu' (allowed: batch_sizes)'; any other violation as
    '<origin>: invalid manifest at <path>: <message>'. Return data."""
    errors = sorted(validator("model.schema.json").iter_errors(data),
                    key=lambda e: (unknown_key(e) is None, list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        line = unknown_key(e)
        if line is None:
            where = "/".join(map(str, e.absolute_path)) or "(root)"
            line = f"invalid manifest at {where}: {' '.join(e.message.split())[:300]}"
        raise SchemaError(f"{origin}: {line}")
    return data


def check(record: dict, origin: str = "<record>", rules=checks.GROUPS) -> dict:
    """Raise SchemaError naming the first broken consistency rule (zoo.checks) of a schema-valid
    record; return the record."""
    broken = checks.broken(record, rules)
    if broken:
        more = f" (+{len(broken) - 1} more)" if len(broken) > 1 else ""
        raise SchemaError(f"{origin}: breaks a record rule {broken[0]}{more}")
    return record

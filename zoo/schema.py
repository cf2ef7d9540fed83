"""Validation of result records against schema/result.schema.json (JSON Schema 2020-12).

Used twice: by `zoo run` before it writes a record, and by the host runner on every record it
collects. Depends only on jsonschema (no torch), so the host environment can import it."""
from __future__ import annotations

import json
from functools import lru_cache

import jsonschema

from zoo.paths import SCHEMA_DIR


class SchemaError(ValueError):
    """A record that does not match the schema; the message is one line."""


@lru_cache(maxsize=None)
def validator(name: str = "result.schema.json") -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(record: dict, origin: str = "<record>", name: str = "result.schema.json") -> dict:
    """Raise SchemaError naming the first violation (JSON path and message); return the record."""
    errors = sorted(validator(name).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(f"{origin}: does not match {name} at {where}: {' '.join(e.message.split())[:300]}{more}")
    return record

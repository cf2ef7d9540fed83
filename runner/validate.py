"""Validate result records against schema/result.schema.json (JSON Schema 2020-12)."""
from __future__ import annotations

import json
from pathlib import Path

from zoo import schema


class ResultError(Exception):
    """A result file that is missing, unreadable or does not match the schema."""


def validate_record(record: dict, origin: str = "<record>") -> dict:
    """Raise ResultError naming the first violation (path and message); return the record."""
    try:
        return schema.validate(record, origin)
    except schema.SchemaError as exc:
        raise ResultError(str(exc)) from None


def load_result(path: Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such result file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    return validate_record(record, str(path))


def find_results(folder: Path) -> list[Path]:
    """Every *.json under folder (recursively) that is a zoo result by its `kind`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultError(f"{folder}: results folder does not exist")
    out = []
    for p in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {"kind": "zoo.result"}  # looks like one of ours but broken: let load_result say why
        # valid JSON that is not an object (the COCO detections a run keeps in <run_id>.predictions/)
        # is not a record
        if isinstance(data, dict) and data.get("kind") == "zoo.result":
            out.append(p)
    return out


def load_results(folder: Path) -> list[dict]:
    """Load and validate every result record in folder; the first invalid one raises."""
    return [load_result(p) for p in find_results(folder)]

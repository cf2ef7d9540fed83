"""Validate result records against schema/result.schema.json (JSON Schema 2020-12)."""
from __future__ import annotations

import json
from pathlib import Path

from zoo import schema


class ResultError(Exception):
    """A result file that is missing, unreadable or does not match the schema."""


class _NotJSON(ResultError):
    """A file that is not JSON (find_results lets load_result name it, if it is among results)."""


def validate_record(record: dict, origin: str = "<record>") -> dict:
    """Raise ResultError naming the first violation (path and message); return the record."""
    try:
        return schema.validate(record, origin)
    except schema.SchemaError as exc:
        raise ResultError(str(exc)) from None


def read_json(path: Path):
    """A result file's JSON value; anything that keeps it from being read is one ResultError line
    naming the file: missing, a folder named *.json, unreadable, not JSON, nested too deeply for
    the parser (RecursionError)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such result file") from None
    except IsADirectoryError:
        what = "a folder named like a result file" if path.suffix == ".json" else "a folder, not a result file"
        raise ResultError(f"{path}: {what} (results are *.json files)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _NotJSON(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ResultError(f"{path}: not a result (JSON nested too deeply to read)") from None
    except OSError as exc:
        raise ResultError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def load_result(path: Path) -> dict:
    path = Path(path)
    record = read_json(path)
    return validate_record(record, str(path))


def find_results(folder: Path) -> list[Path]:
    """Every *.json under folder (recursively) that is a zoo result by its `kind`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultError(f"{folder}: results folder does not exist")
    out = []
    for p in sorted(folder.rglob("*.json")):
        try:
            data = read_json(p)  # a folder named *.json, unreadable, nested too deeply: one line
        except _NotJSON:
            data = {"kind": "zoo.result"}  # looks like one of ours but broken: let load_result say why
        # valid JSON that is not an object (the COCO detections a run keeps in <run_id>.predictions/)
        # is not a record
        if isinstance(data, dict) and data.get("kind") == "zoo.result":
            out.append(p)
    return out


def load_results(folder: Path) -> list[dict]:
    """Load and validate every result record in folder; the first invalid one raises."""
    return [load_result(p) for p in find_results(folder)]

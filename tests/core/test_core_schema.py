"""zoo.schema.validate against tests/fixtures/result_example.json and broken copies of it."""
import copy
import json
from pathlib import Path

import pytest

from zoo.schema import SchemaError, validate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json"


@pytest.fixture(scope="module")
def example():
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def rec(example):
    return copy.deepcopy(example)


def _fails(record, where, *words):
    with pytest.raises(SchemaError) as ei:
        validate(record, "r.json")
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("r.json: does not match result.schema.json at ")
    assert f" at {where}: " in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_example_is_valid(example):
    assert validate(example) is example


def test_missing_required_field(rec):
    del rec["model"]["title"]
    _fails(rec, "model", "'title' is a required property")


def test_missing_top_level_field(rec):
    del rec["perf"]
    _fails(rec, "(root)", "'perf' is a required property")


def test_wrong_type(rec):
    rec["device"]["count"] = "1"
    _fails(rec, "device/count", "'1' is not of type 'integer'")


def test_bad_sha256_pattern(rec):
    rec["provenance"]["weights"]["sha256"] = "DB72943A"      # upper case and too short
    _fails(rec, "provenance/weights/sha256", "does not match")


def test_unknown_extra_field(rec):
    rec["export"]["parity"]["colour"] = "blue"
    _fails(rec, "export/parity", "'colour' was unexpected")


def test_unknown_extra_top_level_field(rec):
    rec["notes"] = "x"
    _fails(rec, "(root)", "'notes' was unexpected")


def test_perf_unknown_scope(rec):
    rec["perf"][2]["scope"] = "end_to_end"
    _fails(rec, "perf/2/scope", "'end_to_end' is not one of")


def test_stage_share_above_one(rec):
    rec["perf"][1]["stages"]["infer"]["share"] = 1.5
    _fails(rec, "perf/1/stages/infer/share", "1.5")


def test_first_error_by_path_and_count_of_more(rec):
    rec["status"] = "maybe"
    rec["device"]["count"] = -1
    msg = _fails(rec, "device/count", "(+1 more)")
    assert "maybe" not in msg


def test_export_may_be_null(rec):
    rec["export"] = None
    validate(rec)

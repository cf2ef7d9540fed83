"""schema/model.schema.json is closed (issue 24, point 6): every object of a manifest declares its
keys, so a misspelt key anywhere (benchmark.warmpu) is refused in one line naming the file, the
key path and the keys allowed, instead of loading without a word. Maps whose keys are data
(options, checkpoints, splits, protocols, per-precision tolerances) keep free keys and closed values."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.paths import MODELS_DIR, SCHEMA_DIR
from zoo.schema import SchemaError, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models"
REAL = sorted(MODELS_DIR.glob("*/model.yaml"))
ORIGIN = "models/{}/model.yaml"

# (model, the object's key path, a key the real manifest has there, its misspelling): the six
# sections the issue names, then nested objects and the sections owned by an adapter or a family
MISSPELT = [
    ("unetpp", ("input",), "layout", "layuot"),
    ("nasfpn", ("output",), "meaning", "meanning"),
    ("fcn8s", ("benchmark",), "batch_sizes", "batch_size"),
    ("fastscnn", ("reference",), "tolerance", "tolerence"),
    ("erfnet", ("weights",), "default", "defualt"),
    ("fcn8s", ("upstream",), "licence", "license"),
    ("fcn8s", ("weights", "checkpoints", "official"), "sha256_prefix", "sha256_prefx"),
    ("unetpp", ("reference", "protocols", "guide"), "description", "descripton"),
    ("fastscnn", ("data", "splits", "guide_order"), "ids_file", "id_file"),
    ("unetpp", ("model", "options", "upsample"), "help", "hlep"),
    ("unetpp", ("verify", "tolerance", "fp32"), "max_flip_fraction", "max_flip_fracton"),
    ("unetpp", ("data", "builtin"), "calibration_ids_file", "calibration_id_file"),
    ("erfnet", ("data", "source"), "labels", "label"),
    ("unetpp", ("preprocess",), "extra_divide", "extra_divid"),
    ("nasfpn", ("postprocess",), "score_thr", "score_thresh"),
    ("unetpp", (), "preprocess", "preprocessing"),
]


def _raw(model: str) -> dict:
    return yaml.safe_load((MODELS_DIR / model / "model.yaml").read_text())


def _at(data: dict, path: tuple) -> dict:
    for k in path:
        data = data[k]
    return data


def _refused(data: dict, origin: str) -> str:
    with pytest.raises(SchemaError) as ei:
        validate_manifest(data, origin)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def _allowed(msg: str) -> list[str]:
    return msg.split("(allowed: ", 1)[1].split(")", 1)[0].split(", ")


def test_every_real_manifest_is_found():
    assert len(REAL) >= 5 and {"unetpp", "nasfpn"} <= {p.parent.name for p in REAL}


@pytest.mark.parametrize("path", REAL + sorted(FIXTURES.glob("*/model.yaml")), ids=lambda p: p.parent.name)
def test_real_manifests_validate(path):
    data = yaml.safe_load(path.read_text())
    assert validate_manifest(data, str(path)) is data


def test_every_object_is_closed_or_a_map_of_closed_values():
    """No object of the schema takes keys it does not declare, but for the maps whose keys are
    data, and each of those gives its values a schema (itself closed); every declared key says
    what it holds."""
    schema = json.loads((SCHEMA_DIR / "model.schema.json").read_text())
    open_maps = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object":
                extra = node.get("additionalProperties")
                if extra is not False:
                    assert isinstance(extra, dict) and "properties" not in node, where
                    open_maps.append(where)
                for key, sub in node.get("properties", {}).items():
                    assert sub.get("description"), f"{where}.{key}: no description"
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "")
    assert sorted(open_maps) == sorted([
        "/properties/model/properties/options", "/properties/weights/properties/checkpoints",
        "/properties/data/properties/splits", "/properties/reference/properties/protocols",
        "/properties/verify/properties/tolerance"])


def test_the_issue_example_is_one_line():
    data = _raw("nasfpn")
    data["benchmark"]["warmpu"] = 5
    assert _refused(data, "models/nasfpn/model.yaml") == \
        "models/nasfpn/model.yaml: benchmark: unknown key 'warmpu' (allowed: batch_sizes)"


@pytest.mark.parametrize("model, path, key, typo", MISSPELT, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_a_misspelt_key_is_refused_naming_file_path_and_key(model, path, key, typo):
    """The key renamed: a required key also goes missing, yet the line names the misspelling
    (which says what is missing)."""
    data = _raw(model)
    validate_manifest(copy.deepcopy(data), "ok")           # the real one passes: the typo is the cause
    obj = _at(data, path)
    obj[typo] = obj.pop(key)
    origin = ORIGIN.format(model)
    msg = _refused(data, origin)
    head = f"{origin}: {'.'.join(path)}: unknown key '{typo}'" if path else f"{origin}: unknown top-level key '{typo}'"
    assert msg.startswith(head + " (allowed: "), msg
    assert msg.endswith(f"; did you mean '{key}'?"), msg
    allowed = _allowed(msg)
    assert key in allowed and typo not in allowed
    assert set(_at(_raw(model), path)) <= set(allowed)     # every key the real manifest uses there


def test_keys_of_a_data_map_stay_free():
    """A new checkpoint, split, protocol or precision is a new name, not an unknown key."""
    data = _raw("unetpp")
    data["weights"]["checkpoints"]["mine"] = {"path": "weights/mine.pth", "sha256": "0" * 64}
    data["data"]["splits"]["test"] = {"name": "test"}
    data["reference"]["protocols"]["paper"] = {"metric": "iou", "value": 0.8, "source": "the paper"}
    data["verify"]["tolerance"]["fp16"] = {"rtol": 0.1, "atol": 0.001, "max_flip_fraction": 0.01}
    validate_manifest(data, "ok")


def test_several_unknown_keys_in_one_object_are_all_named():
    data = _raw("unetpp")
    data["input"]["colour"] = "rgb"
    data["input"]["range"] = [0, 1]
    msg = _refused(data, "m.yaml")
    assert msg.startswith("m.yaml: input: unknown key 'colour' (and 'range') (allowed: name, shape, dtype, layout")


def test_other_violations_keep_their_line():
    data = _raw("unetpp")
    data["preprocess"]["mean"] = "half"
    assert _refused(data, "m.yaml").startswith("m.yaml: invalid manifest at preprocess/mean: 'half' is not valid")


def _write(folder: Path, data: dict) -> Path:
    p = folder / data["name"] / "model.yaml"
    p.parent.mkdir(parents=True)
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.mark.parametrize("model, path, key, typo", MISSPELT[:7], ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_load_manifest_refuses_a_copy_with_a_misspelt_key(tmp_path, model, path, key, typo):
    """Through zoo.manifest, as every command loads a model: the key added beside the right one
    (nothing missing), the one line names the file, the object and the key."""
    data = _raw(model)
    data["name"] = f"{model}_copy"
    obj = _at(data, path)
    obj[typo] = copy.deepcopy(obj[key])
    p = _write(tmp_path, data)
    with pytest.raises(ZooError) as ei:
        load_manifest(data["name"], models_dir=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{p}: ") and f"'{typo}'" in msg, msg
    assert path[-1] in msg, msg


def test_a_plugged_in_model_with_an_unknown_top_level_key_is_refused(tmp_path, monkeypatch):
    """A ZOO_MODEL_DIRS model (tests/fixtures/models/tinyseg's manifest, renamed) with a top-level
    key the schema does not declare: refused by load_manifest and by `python -m zoo models`."""
    data = yaml.safe_load((FIXTURES / "tinyseg" / "model.yaml").read_text())
    data["name"] = "tinyplug"
    validate_manifest(copy.deepcopy(data), "ok")
    data["preprocessing"] = data.pop("preprocess")
    p = _write(tmp_path, data)
    assert _refused(data, str(p)).startswith(f"{p}: unknown top-level key 'preprocessing' (allowed: name, ")
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(tmp_path))
    with pytest.raises(ZooError) as ei:
        load_manifest("tinyplug")
    assert str(ei.value).startswith(f"{p}: ") and "'preprocessing'" in str(ei.value)
    proc = subprocess.run([sys.executable, "-m", "zoo", "models"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    (line,) = [x for x in proc.stderr.splitlines() if str(p) in x]
    assert "'preprocessing'" in line

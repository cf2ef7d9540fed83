"""zoo.manifest: discovery and schema validation of models/<name>/model.yaml."""
import copy
import dataclasses
import pickle

import pytest
import yaml

from zoo.errors import ZooError
from zoo.manifest import Manifest, available_models, load_manifest
from zoo.paths import MODELS_DIR


def _write(models_dir, folder, data):
    d = models_dir / folder
    d.mkdir(parents=True, exist_ok=True)
    p = d / "model.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


@pytest.fixture(scope="module")
def unetpp_raw():
    return yaml.safe_load((MODELS_DIR / "unetpp" / "model.yaml").read_text())


def test_load_unetpp():
    m = load_manifest("unetpp")
    assert isinstance(m, Manifest)
    assert m.name == "unetpp" and m.dir == MODELS_DIR / "unetpp"
    assert m.input["name"] == "actual_input_1" and m.output["name"] == "output1"
    assert m.weights["default"] in m.weights["checkpoints"]
    assert m.export["dynamic_batch"] is True
    with pytest.raises(AttributeError):
        m.no_such_section
    assert "unetpp" in available_models()


def test_unknown_model_lists_known():
    with pytest.raises(ZooError) as ei:
        load_manifest("nope")
    msg = str(ei.value)
    assert "'nope'" in msg and "known:" in msg and "unetpp" in msg


@pytest.mark.parametrize("spelling", ["../models/unetpp", "unetpp/", "./unetpp", "unetpp/../unetpp", "UNETPP"])
def test_a_path_is_not_a_model_name(spelling):
    """Only a discovered name becomes a path (../models/unetpp reached the cache and results code)."""
    from zoo.paths import MODELS_DIR
    for name in (spelling, str(MODELS_DIR / "unetpp")):
        with pytest.raises(ZooError, match=r"unknown model .*not a path"):
            load_manifest(name)


def test_unknown_model_in_custom_dir(tmp_path, unetpp_raw):
    assert available_models(tmp_path) == []
    with pytest.raises(ZooError, match=r"known: none"):
        load_manifest("x", models_dir=tmp_path)
    for name in ("beta", "alpha"):
        _write(tmp_path, name, {**unetpp_raw, "name": name})
    assert available_models(tmp_path) == ["alpha", "beta"]
    with pytest.raises(ZooError, match=r"\(known: alpha, beta;"):
        load_manifest("x", models_dir=tmp_path)
    assert load_manifest("alpha", models_dir=tmp_path).dir == tmp_path / "alpha"


def test_schema_violation_names_file_and_path(tmp_path, unetpp_raw):
    bad = copy.deepcopy(unetpp_raw)
    bad["name"] = "bad"
    bad["export"]["opset"] = "seventeen"
    p = _write(tmp_path, "bad", bad)
    with pytest.raises(ZooError) as ei:
        load_manifest("bad", models_dir=tmp_path)
    msg = str(ei.value)
    assert str(p) in msg and "at export/opset" in msg and "'seventeen' is not of type 'integer'" in msg
    assert "\n" not in msg


def test_schema_violation_nested_checksum(tmp_path, unetpp_raw):
    bad = copy.deepcopy(unetpp_raw)
    bad["name"] = "bad"
    bad["weights"]["checkpoints"]["builtin"]["sha256"] = "nothex"
    _write(tmp_path, "bad", bad)
    with pytest.raises(ZooError, match=r"at weights/checkpoints/builtin/sha256"):
        load_manifest("bad", models_dir=tmp_path)


def test_missing_section_and_unknown_key(tmp_path, unetpp_raw):
    bad = copy.deepcopy(unetpp_raw)
    bad["name"] = "bad"
    del bad["benchmark"]
    _write(tmp_path, "bad", bad)
    with pytest.raises(ZooError, match=r"at \(root\): 'benchmark' is a required property"):
        load_manifest("bad", models_dir=tmp_path)
    bad["benchmark"] = {"batch_sizes": [1]}
    bad["colour"] = "blue"
    _write(tmp_path, "bad", bad)
    with pytest.raises(ZooError, match=r"unknown top-level key 'colour' \(allowed: name, "):
        load_manifest("bad", models_dir=tmp_path)


def test_name_must_match_folder(tmp_path, unetpp_raw):
    p = _write(tmp_path, "other", unetpp_raw)        # name: unetpp in folder other
    with pytest.raises(ZooError) as ei:
        load_manifest("other", models_dir=tmp_path)
    assert str(p) in str(ei.value) and "does not match its folder" in str(ei.value)


def test_invalid_yaml(tmp_path):
    p = _write(tmp_path, "broken", "name: [unclosed\n  title: x\n")
    with pytest.raises(ZooError) as ei:
        load_manifest("broken", models_dir=tmp_path)
    assert str(p) in str(ei.value) and "invalid YAML" in str(ei.value) and "\n" not in str(ei.value)


def test_empty_yaml(tmp_path):
    _write(tmp_path, "empty", "")
    with pytest.raises(ZooError, match=r"invalid manifest at \(root\)"):
        load_manifest("empty", models_dir=tmp_path)


def test_one_field_per_section(unetpp_raw):
    """Every section of the YAML is a field of its own, as written; `adapter` becomes adapter_path."""
    m = load_manifest("unetpp")
    for section in ("title", "task", "upstream", "guide", "model", "weights", "input", "output", "export",
                    "verify", "data", "benchmark", "reference", "preprocess", "postprocess"):
        assert getattr(m, section) == unetpp_raw.get(section, {}), section
    assert m.adapter_path == unetpp_raw["adapter"] == "models.unetpp.adapter:UNetPPAdapter"
    assert set(unetpp_raw) - {f.name for f in dataclasses.fields(Manifest)} == {"adapter"}
    assert not hasattr(m, "raw")                      # no second copy of the YAML to read from


def test_optional_sections_default_to_empty(tmp_path, unetpp_raw):
    data = {k: v for k, v in unetpp_raw.items() if k not in ("preprocess", "postprocess", "guide")}
    _write(tmp_path, "bare", {**data, "name": "bare"})
    m = load_manifest("bare", models_dir=tmp_path)
    assert m.preprocess == {} and m.postprocess == {} and m.guide is None


def test_adapter_class_and_adapter():
    from models.unetpp.adapter import UNetPPAdapter
    m = load_manifest("unetpp")
    assert m.adapter_class() is UNetPPAdapter
    a = m.adapter(upsample="nearest")
    assert isinstance(a, UNetPPAdapter) and a.manifest is m and a.options["upsample"] == "nearest"


def test_manifest_is_frozen():
    m = load_manifest("unetpp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.raw = {}


def test_manifest_can_be_copied_and_pickled():
    m = load_manifest("unetpp")
    c = copy.deepcopy(m)
    assert c == m and c.name == m.name and c.data is not m.data
    assert pickle.loads(pickle.dumps(m)) == m

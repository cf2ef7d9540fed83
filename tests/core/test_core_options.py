"""Model options: declared in each manifest (default, type, allowed values) and checked generically
before any work; values arrive as --option text or as Python values."""
from __future__ import annotations

import copy

import pytest
import yaml

from zoo.errors import ZooError
from zoo.manifest import available_models, load_manifest
from zoo.schema import SchemaError, validate_manifest
from zoo.options import coerce, defaults, describe, resolve_options
from zoo.paths import MODELS_DIR

DECL = {
    "mode": {"default": "a", "type": "choice", "choices": ["a", "b"]},
    "clamp": {"default": False, "type": "choice", "choices": [False, True, "regex"]},
    "flag": {"default": True, "type": "bool"},
    "n": {"default": 3, "type": "int", "min": 1, "max": 8},
    "hw": {"default": "auto", "type": "str", "pattern": "auto|[1-9][0-9]*x[1-9][0-9]*"},
    "path": {"default": "", "type": "str"},
}


@pytest.mark.parametrize("model", available_models())
def test_every_manifest_declares_its_options_and_defaults_pass(model):
    m = load_manifest(model)
    decl = m.model["options"]
    assert decl, f"{model}: no options declared"
    assert resolve_options(model, decl, {}) == defaults(decl)
    assert len(describe(decl)) == len(decl)
    assert m.adapter().options == defaults(decl)


def test_adapter_options_are_read_only():
    """An adapter keeps no state: its resolved options cannot be changed after construction."""
    a = load_manifest("unetpp").adapter(upsample="nearest")
    with pytest.raises(TypeError):
        a.options["upsample"] = "bilinear"
    with pytest.raises(TypeError):
        del a.options["upsample"]
    assert a.options["upsample"] == "nearest" and a.variant.endswith("upsample=nearest")
    assert load_manifest("unetpp").adapter(upsample=None).options["upsample"] == "bilinear"  # None: the default


def test_text_values_are_converted_by_the_declared_type():
    got = resolve_options("toy", DECL, {"mode": "b", "clamp": "regex", "flag": "FALSE", "n": "8", "hw": "128x256",
                                        "path": "out/x.json"})
    assert got == {"mode": "b", "clamp": "regex", "flag": False, "n": 8, "hw": "128x256", "path": "out/x.json"}
    assert resolve_options("toy", DECL, {"clamp": "true"})["clamp"] is True
    assert resolve_options("toy", DECL, {"clamp": True})["clamp"] is True


@pytest.mark.parametrize("name,value,msg", [
    ("mode", "bogus", "option mode must be one of a, b, got 'bogus'"),
    ("clamp", 1, "option clamp must be one of false, true, regex, got 1"),      # 1 is not true
    ("clamp", "1", "must be one of false, true, regex"),
    ("flag", "yes please", "option flag must be true or false"),
    ("flag", 0, "option flag must be true or false"),
    ("n", "-3", "option n must be in [1, 8], got -3"),
    ("n", "3.5", "option n must be an integer"),
    ("n", True, "option n must be an integer"),
    ("hw", "12y3", "option hw must match"),
    ("path", 5, "option path must be a string"),
    ("path", "a\nb", "must not contain control characters"),
    ("mode", "!!python/object/apply:os.system ['true']", "must be one of a, b"),   # text, never YAML
])
def test_bad_values_are_one_line_errors_naming_option_and_value(name, value, msg):
    with pytest.raises(ZooError) as ei:
        resolve_options("toy", DECL, {name: value})
    text = str(ei.value)
    assert msg in text and text.startswith("toy: option") and "\n" not in text


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(ZooError, match=r"toy: unknown model option\(s\) colour \(known: clamp, flag, hw, mode, n, path\)"):
        resolve_options("toy", DECL, {"colour": "red"})


def test_manifest_schema_refuses_a_bad_declaration():
    raw = yaml.safe_load((MODELS_DIR / "unetpp" / "model.yaml").read_text())
    for bad_decl in ({"default": "x", "type": "choice"},              # choice without choices
                     {"default": "x", "type": "bool"},                # default of the wrong type
                     {"default": 1, "type": "float"},                 # unknown type
                     {"default": 1, "type": "int", "colour": 2},      # unknown key
                     "bilinear"):                                     # a bare default, undeclared
        bad = copy.deepcopy(raw)
        bad["model"]["options"]["upsample"] = bad_decl
        with pytest.raises(SchemaError, match=r"model\.yaml: (invalid manifest at model/options/upsample|model\.options\.upsample)"):
            validate_manifest(bad, "models/unetpp/model.yaml")


def test_coerce_reports_an_unknown_type():
    with pytest.raises(ZooError, match="unknown option type"):
        coerce("toy", "x", {"type": "float", "default": 1.0}, 1.0)

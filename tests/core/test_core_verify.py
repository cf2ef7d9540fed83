"""zoo.stages.verify: the runtime under test against PyTorch, numbers and decisions, through the
one comparator (zoo.comparator; its own tests, detection matching and flip counting included, are
tests/core/test_core_comparator.py). `compare` runs a real adapter's postprocess (UNet++: guide =
logits > 0.5, upstream = sigmoid(logits) > 0.5) on both outputs. Every expected figure is computed
by hand."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.stages.verify import compare, tolerance, verify_runtime

UNETPP = load_manifest("unetpp")
ADAPTER = UNETPP.adapter()
TOL = {"rtol": 1e-4, "atol": 1e-5, "max_flip_fraction": 1e-4}


# ------------------------------------------------------------------ compare, with UNet++'s postprocess

# two samples of 1x2x2 logits; |reference| peaks at 4, so numbers pass within 1e-5 + 1e-4 * 4 = 4.1e-4
REF = np.array([[[[4.0, -2.0], [0.25, 0.75]]],
                [[[-4.0, 1.0], [0.5, -0.5]]]], np.float32)


def test_compare_equal_outputs_pass():
    out = compare(REF, REF.copy(), ADAPTER, [None, None], TOL)
    assert out["passed"] is True and out["numerics_passed"] is True
    assert out["max_abs_diff"] == 0 and out["decision_flips"] == 0
    assert out["decisions"] == {"guide": {"flips": 0, "decisions": 8, "fraction": 0.0},
                                "upstream": {"flips": 0, "decisions": 8, "fraction": 0.0}}
    assert out["max_flip_fraction"] == 1e-4 and out["rtol"] == 1e-4 and out["atol"] == 1e-5


def test_compare_small_differences_pass():
    cand = REF - np.float32(3e-4)                   # within 4.1e-4; 0.5 -> 0.4997 stays "not > 0.5"
    out = compare(REF, cand, ADAPTER, [None, None], TOL)
    assert out["passed"] is True and out["decision_flips"] == 0
    assert out["max_abs_diff"] == pytest.approx(3e-4, rel=1e-3)
    assert out["max_rel_diff"] == pytest.approx(3e-4 / 4, rel=1e-3)


def test_compare_fails_on_numbers_even_without_a_flip():
    cand = REF.copy()
    cand[0, 0, 0, 0] = 4.5                          # far from both thresholds, 0.5 > 4.1e-4
    out = compare(REF, cand, ADAPTER, [None, None], TOL)
    assert out["numerics_passed"] is False and out["decision_flips"] == 0
    assert out["max_abs_diff"] == pytest.approx(0.5) and out["max_rel_diff"] == pytest.approx(0.125)
    assert out["mean_abs_diff"] == pytest.approx(0.5 / 8)
    assert out["passed"] is False


def test_compare_fails_on_flipped_decisions_within_the_numbers():
    cand = REF.copy()
    cand[1, 0, 1, 0] = np.float32(0.5001)           # 0.5 -> 0.5001: guide's "> 0.5" flips, numbers pass
    out = compare(REF, cand, ADAPTER, [None, None], TOL)
    assert out["numerics_passed"] is True
    assert out["decisions"]["guide"] == {"flips": 1, "decisions": 8, "fraction": 1 / 8}
    assert out["decisions"]["upstream"]["flips"] == 0   # sigmoid: 0.5 and 0.5001 are both > 0
    assert out["decision_flips"] == 1 and out["passed"] is False
    # a tolerance allowing one pixel in eight
    assert compare(REF, cand, ADAPTER, [None, None], {**TOL, "max_flip_fraction": 0.125})["passed"] is True


def test_compare_sigmoid_flip():
    cand = REF.copy()
    cand[1, 0, 1, 1] = np.float32(1e-4)             # -0.5 -> +1e-4: upstream flips, guide does not
    out = compare(REF, cand, ADAPTER, [None, None], {"rtol": 1.0, "atol": 0.0, "max_flip_fraction": 0.2})
    assert out["numerics_passed"] is True           # 0.5001 <= 1.0 * 4
    assert out["decisions"]["upstream"] == {"flips": 1, "decisions": 8, "fraction": 1 / 8}
    assert out["decisions"]["guide"]["flips"] == 0 and out["passed"] is True


def test_compare_shape_mismatch():
    with pytest.raises(ZooError, match=r"verify: output shapes differ: reference \(2, 1, 2, 2\), candidate \(1, 1, 2, 2\)"):
        compare(REF, REF[:1], ADAPTER, [None, None], TOL)


def test_tolerance_by_precision():
    assert tolerance(UNETPP, "fp32") == UNETPP.verify["tolerance"]["fp32"]
    with pytest.raises(ZooError, match=r"unetpp: no verify tolerance declared for precision 'fp16' \(declared: bf16, fp32, int8\)"):
        tolerance(UNETPP, "fp16")


def test_verify_runtime_on_a_real_runtime(tiny_model, tiny_onnx, make_batch, tmp_path):
    """ONNX Runtime running the tiny exported network against its PyTorch module, judged by the
    UNet++ adapter's postprocess (any 1xHxW logits) and tolerances."""
    import torch

    from tests.core.conftest import IN_NAME, OUT_NAME
    from zoo.runtimes import ModelArtifacts
    from zoo.runtimes.onnxruntime_rt import OnnxRuntime
    batch = make_batch(3, seed=5)
    with torch.inference_mode():
        reference = tiny_model(torch.from_numpy(batch)).numpy()
    rt = OnnxRuntime(threads=1)
    rt.compile(ModelArtifacts(tiny_onnx, [IN_NAME], [OUT_NAME]), tmp_path)
    rt.load()
    try:
        out = verify_runtime(rt, reference, batch, ADAPTER, [None] * 3, UNETPP, IN_NAME, OUT_NAME)
    finally:
        rt.close()
    assert out["reference"].startswith("torch") and out["candidate"] == f"onnxruntime {rt.version()}"
    assert out["precision"] == "fp32" and out["batch_size"] == 3
    assert out["passed"] is True and out["max_rel_diff"] < 1e-4
    assert set(out["decisions"]) == {"guide", "upstream"}
    assert all(d["decisions"] == 3 * 16 * 16 for d in out["decisions"].values())

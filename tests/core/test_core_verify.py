"""zoo.stages.verify: the runtime under test against PyTorch, numbers and decisions. Detections are
matched one to one (same category, IoU >= 0.5, in descending reference score); maps compared pixel
by pixel; `compare` runs a real adapter's postprocess (UNet++: guide = logits > 0.5, upstream =
sigmoid(logits) > 0.5) on both outputs. Every expected figure is computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.predictions import Detections
from zoo.stages.verify import compare, detection_flips, prediction_flips, tolerance, verify_runtime

UNETPP = load_manifest("unetpp")
ADAPTER = UNETPP.adapter()
TOL = {"rtol": 1e-4, "atol": 1e-5, "max_flip_fraction": 1e-4}


def dets(*rows) -> Detections:
    """rows of (category, x, y, w, h, score) for image 1."""
    return Detections(1, [{"image_id": 1, "category_id": c, "bbox": [x, y, w, h], "score": s}
                          for c, x, y, w, h, s in rows])


# ------------------------------------------------------------------ detections

def test_identical_detections_flip_nothing():
    d = dets((1, 0, 0, 10, 10, 0.9), (3, 5, 5, 2, 2, 0.4))
    assert detection_flips(d, d) == (0, 4)


@pytest.mark.parametrize("shift,flips", [
    (3, 0),   # inter 7x10 = 70, union 200 - 70 = 130: IoU 0.538 >= 0.5, a match
    (4, 2),   # inter 60, union 140: IoU 0.429 < 0.5, both sides unmatched
])
def test_shifted_box_below_and_above_the_match_iou(shift, flips):
    ref = dets((1, 0, 0, 10, 10, 0.9))
    cand = dets((1, shift, 0, 10, 10, 0.9))
    assert detection_flips(ref, cand) == (flips, 2)


def test_iou_of_exactly_one_half_matches():
    # [0, 0, 4, 1] against [0, 0, 2, 1]: inter 2, union 4
    assert detection_flips(dets((1, 0, 0, 4, 1, 0.9)), dets((1, 0, 0, 2, 1, 0.9))) == (0, 2)
    assert detection_flips(dets((1, 0, 0, 4, 1, 0.9)), dets((1, 0, 0, 2, 1, 0.9)), iou=0.51) == (2, 2)


def test_another_category_is_not_a_match():
    assert detection_flips(dets((1, 0, 0, 10, 10, 0.9)), dets((2, 0, 0, 10, 10, 0.9))) == (2, 2)


def test_empty_sides():
    three = dets((1, 0, 0, 1, 1, 0.5), (1, 5, 5, 1, 1, 0.5), (2, 0, 0, 1, 1, 0.5))
    assert detection_flips(dets(), three) == (3, 3)
    assert detection_flips(three, dets()) == (3, 3)
    assert detection_flips(dets(), dets()) == (0, 0)


def test_matching_is_one_to_one():
    # two reference boxes over the one candidate: only one can take it
    ref = dets((1, 0, 0, 10, 10, 0.9), (1, 1, 0, 10, 10, 0.8))
    cand = dets((1, 1, 0, 10, 10, 0.7))
    assert detection_flips(ref, cand) == (1, 3)
    # greedy in descending reference score, each taking its best free candidate (not an optimal
    # assignment): A [0,0,10,10] and B [4,0,10,10]; X [2,0,10,10] overlaps both by 80/120 = 0.667,
    # Y [-3,0,10,10] overlaps A by 70/130 = 0.538 and B by 30/170 = 0.176
    cand = dets((1, 2, 0, 10, 10, 0.5), (1, -3, 0, 10, 10, 0.5))
    a_first = dets((1, 0, 0, 10, 10, 0.9), (1, 4, 0, 10, 10, 0.8))
    assert detection_flips(a_first, cand) == (2, 4)     # A takes X; B is left with Y (< 0.5)
    b_first = dets((1, 0, 0, 10, 10, 0.8), (1, 4, 0, 10, 10, 0.9))
    assert detection_flips(b_first, cand) == (0, 4)     # B takes X; A takes Y


# ------------------------------------------------------------------ maps

def test_prediction_flips_on_maps():
    a = np.zeros((2, 3), np.uint8)
    b = a.copy()
    b[0, 1] = 7                                      # one label differs in sample 1
    m1 = np.zeros((2, 3), bool)
    m2 = m1.copy()
    m2[1, :] = True                                  # three mask pixels differ in sample 2
    ref = [{"labels": a, "mask": m1}, {"labels": a, "mask": m1}]
    cand = [{"labels": b, "mask": m1}, {"labels": a, "mask": m2}]
    assert prediction_flips(ref, cand) == {
        "labels": {"flips": 1, "decisions": 12, "fraction": 1 / 12},
        "mask": {"flips": 3, "decisions": 12, "fraction": 3 / 12}}
    assert prediction_flips(ref, ref) == {k: {"flips": 0, "decisions": 12, "fraction": 0.0} for k in ("labels", "mask")}


def test_prediction_flips_of_maps_of_another_shape_count_every_pixel():
    got = prediction_flips([{"labels": np.zeros((2, 3), np.uint8)}], [{"labels": np.zeros((3, 3), np.uint8)}])
    assert got == {"labels": {"flips": 9, "decisions": 9, "fraction": 1.0}}


def test_prediction_flips_of_detections_add_up_over_images():
    ref = [dets((1, 0, 0, 10, 10, 0.9)), dets((1, 0, 0, 10, 10, 0.9), (2, 0, 0, 5, 5, 0.5))]
    cand = [dets((1, 0, 0, 10, 10, 0.9)), dets((1, 4, 0, 10, 10, 0.9), (2, 0, 0, 5, 5, 0.5))]
    assert prediction_flips(ref, cand) == {"detections": {"flips": 2, "decisions": 6, "fraction": 2 / 6}}


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

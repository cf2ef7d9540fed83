"""zoo.comparator, the one comparator of export parity, verify, fidelity and diagnose: numbers
(max/mean absolute error, the two relative errors each under its own name, cosine, channel error,
the worst element) streamed over batches, decisions (flipped pixels, detections matched one to
one: same category, IoU >= 0.5, in descending reference score) by prediction key, tolerances per
output, and the verdicts. Every expected figure is computed by hand or by numpy directly."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.comparator import (DecisionDiff, OutputDiff, Tolerance, compare, detection_flips, flip_fraction,
                            prediction_flips)
from zoo.errors import ZooError
from zoo.predictions import Detections


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


def test_flip_fraction_is_the_largest_key_s():
    assert flip_fraction({"a": {"flips": 1, "decisions": 4, "fraction": 0.25},
                          "b": {"flips": 1, "decisions": 2, "fraction": 0.5}}) == 0.5
    assert flip_fraction({}) == 0.0


# ------------------------------------------------------------------ numbers

def test_numbers_by_hand():
    ref = np.array([[1.0, -2.0], [4.0, 0.5]], np.float32)
    cand = np.array([[1.0, 2.0], [4.0, -0.5]], np.float32)    # two elements change sign
    d = OutputDiff().update(ref, cand)
    assert d.max_abs_diff == 4.0                               # |2 - -2|
    assert d.max_rel_diff == 1.0                               # 4 / max|ref| = 4 / 4
    assert d.mean_abs_diff == 1.25                             # (0 + 4 + 0 + 1) / 4
    assert d.l2_rel_err == pytest.approx(np.sqrt(17 / 21.25))  # ||(0, 4, 0, 1)|| / ||ref||
    assert d.cosine == pytest.approx((1 - 4 + 16 - 0.25) / 21.25)
    assert d.worst == {"index": (0, 1), "reference": -2.0, "candidate": 2.0}
    assert d.within(Tolerance(rtol=1.0, atol=0.0)) and not d.within(Tolerance(rtol=0.99, atol=0.0))
    assert not d.integer


def test_the_two_relative_errors_are_different_figures():
    """max|d| / max|r| (parity, verify) and ||d|| / ||r|| (diagnose): one element far off in a
    large output is a large first and a small second."""
    ref = np.ones(10_000)
    cand = ref.copy()
    cand[123] = 2.0
    d = OutputDiff().update(ref, cand)
    assert d.max_rel_diff == 1.0
    assert d.l2_rel_err == pytest.approx(1 / 100)


def test_tolerance_is_relative_to_the_output_scale():
    ref = np.array([1.0, 2.0, 4.0])
    cand = np.array([1.0, 2.0, 4.5])                           # diff 0.5 = 0.125 * max|ref|
    d = OutputDiff().update(ref, cand)
    assert d.within(Tolerance(0.125, 0.0)) and not d.within(Tolerance(0.1, 0.0)) and d.within(Tolerance(0.1, 0.1))
    zero = OutputDiff().update(np.zeros(3), np.array([0.0, 1e-6, 0.0]))
    assert zero.scale == 1.0 and zero.max_rel_diff == 1e-6 and zero.within(Tolerance(0.0, 1e-5))


def test_streaming_over_batches_equals_one_batch():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((6, 4, 7, 5)).astype(np.float32)
    cand = (ref + rng.standard_normal(ref.shape).astype(np.float32) * 1e-3).astype(np.float32)
    cand[4, 2, 3, 1] += 0.5                                   # the worst element, in the third batch
    whole = OutputDiff(channel_axis=1).update(ref, cand)
    parts = OutputDiff(channel_axis=1)
    for i in range(0, 6, 2):
        parts.update(ref[i:i + 2], cand[i:i + 2])
    assert parts.worst["index"] == whole.worst["index"] == (4, 2, 3, 1)
    assert parts.max_abs_diff == whole.max_abs_diff and parts.max_rel_diff == whole.max_rel_diff
    assert parts.mean_abs_diff == pytest.approx(whole.mean_abs_diff, rel=1e-12)
    assert parts.l2_rel_err == pytest.approx(whole.l2_rel_err, rel=1e-12)
    assert parts.cosine == pytest.approx(whole.cosine, rel=1e-12)
    assert parts.channel_rel_err(1e-12) == pytest.approx(whole.channel_rel_err(1e-12), rel=1e-12)
    assert parts.count == ref.size and parts.rows == 6


def test_numbers_equal_numpy_bit_for_bit():
    """The recorded figures are exactly numpy's of the whole arrays (float64): the values a record
    holds do not depend on the comparator's streaming."""
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((4, 1, 33, 17)).astype(np.float32)
    cand = (ref * (1 + rng.standard_normal(ref.shape) * 1e-5)).astype(np.float32)
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    diff = np.abs(c - r)
    scale = float(np.abs(r).max())
    got = compare(ref, cand, {"rtol": 1e-4, "atol": 1e-5}).record()
    assert got == {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / scale),
                   "mean_abs_diff": float(diff.mean()), "rtol": 1e-4, "atol": 1e-5,
                   "passed": bool((diff <= 1e-5 + 1e-4 * scale).all())}


def test_nan_is_never_within_and_stays():
    ref = np.array([1.0, 2.0])
    d = OutputDiff().update(ref, np.array([1.0, np.nan]))
    assert np.isnan(d.max_abs_diff) and d.worst["index"] == (1,)
    assert not d.within(Tolerance(1e9, 1e9))
    d.update(ref, np.array([5.0, 2.0]))                        # a later finite batch does not hide it
    assert np.isnan(d.max_abs_diff) and d.worst["index"] == (1,)
    later = OutputDiff().update(ref, np.array([5.0, 2.0]))    # nor an earlier one
    later.update(ref, np.array([np.nan, 2.0]))
    assert np.isnan(later.max_abs_diff) and later.worst["index"] == (2,) and np.isnan(later.max_rel_diff)


def test_shape_mismatch_is_one_line_naming_the_caller():
    with pytest.raises(ZooError, match=r"^parity: output shapes differ: reference \(2, 1\), candidate \(1, 2\)$"):
        compare(np.zeros((2, 1)), np.zeros((1, 2)), Tolerance(1e-4, 1e-5), context="parity")
    with pytest.raises(ZooError, match=r"^diagnose: shapes differ: fp32 \(2,\), int8 \(3,\)$"):
        OutputDiff("diagnose", ("fp32", "int8"), subject="").update(np.zeros(2), np.zeros(3))


# ------------------------------------------------------------------ compare: outputs and decisions

def threshold(outputs):
    """A decision function: per sample, the pixels above 0 (of the 'logits' output of a dict)."""
    x = outputs["logits"] if isinstance(outputs, dict) else outputs
    return [{"mask": o > 0} for o in x]


def test_compare_numbers_and_decisions():
    ref = np.array([[1.0, -1.0, 0.5, -0.5], [2.0, -2.0, 1e-3, -1e-3]])
    cand = ref.copy()
    cand[1, 2] = -1e-3                                         # within the numbers, a flipped decision
    tol = Tolerance(rtol=1e-3, atol=0.0, max_flip_fraction=0.1)
    got = compare(ref, cand, tol, threshold)
    assert got.outputs["output"].within(tol) and got.numerics_passed("output")
    assert got.decisions == {"mask": {"flips": 1, "decisions": 8, "fraction": 1 / 8}}
    assert got.decision_flips == 1 and got.flip_fraction == 1 / 8
    assert got.passed is False                                 # 1/8 > 0.1
    assert compare(ref, cand, Tolerance(1e-3, 0.0, 0.125), threshold).passed is True
    rec = got.record()
    assert list(rec) == ["max_abs_diff", "max_rel_diff", "mean_abs_diff", "rtol", "atol", "passed", "decision_flips",
                         "decisions", "max_flip_fraction", "numerics_passed"]
    assert rec["passed"] is False and rec["numerics_passed"] is True and rec["max_flip_fraction"] == 0.1
    assert rec["max_abs_diff"] == pytest.approx(2e-3) and rec["max_rel_diff"] == pytest.approx(1e-3)
    # without a decision function: numbers only (export.parity's fields)
    assert "decision_flips" not in compare(ref, cand, tol).record()
    assert compare(ref, cand, tol).flip_fraction is None


def test_integer_outputs_are_judged_by_their_decisions():
    ref = np.array([[0, 1, 2, 3]], np.int64)
    cand = np.array([[0, 1, 2, 0]], np.int64)                  # a class flipped: |d| 3, far beyond rtol

    def labels(outputs):
        return [{"labels": o} for o in outputs]
    lenient = compare(ref, cand, Tolerance(0.0, 0.0, 0.25), labels)
    assert not lenient.outputs["output"].within(lenient.tolerances["output"])
    assert lenient.numerics_passed("output") is True and lenient.passed is True   # 1 of 4 <= 0.25
    strict = compare(ref, cand, Tolerance(0.0, 0.0, 0.2), labels)
    assert strict.numerics_passed("output") is False and strict.passed is False
    # numbers only: an integer output is judged by its numbers
    assert compare(ref, cand, Tolerance(0.0, 0.0, 0.25)).passed is False


def test_outputs_by_name_with_a_tolerance_per_output():
    ref = {"logits": np.array([[1.0, -1.0]]), "aux": np.array([[10.0, 20.0]])}
    cand = {"logits": np.array([[1.0, -1.0]]), "aux": np.array([[10.0, 21.0]])}   # aux off by 5% of its scale
    tol = Tolerance(1e-3, 0.0, 0.0)
    got = compare(ref, cand, tol, threshold)
    assert got.numerics_passed("logits") and not got.numerics_passed("aux") and got.passed is False
    loose = compare(ref, cand, tol, threshold, per_output={"aux": {"rtol": 0.05, "atol": 0.0}})
    assert loose.tolerances["aux"] == Tolerance(0.05, 0.0) and loose.passed is True
    assert loose.record("aux")["max_rel_diff"] == 1 / 20 and loose.record()["max_abs_diff"] == 0.0
    assert loose.decisions == {"mask": {"flips": 0, "decisions": 2, "fraction": 0.0}}
    with pytest.raises(ZooError, match=r"^verify: outputs differ: reference \['logits', 'aux'\], "
                                       r"candidate \['logits'\]$"):
        compare(ref, {"logits": cand["logits"]}, tol, context="verify")
    with pytest.raises(ZooError, match=r"tolerance for unknown output\(s\) boxes"):
        compare(ref, cand, tol, per_output={"boxes": tol})


def test_shapes_are_checked_before_any_decision():
    called = []
    with pytest.raises(ZooError, match="output shapes differ"):
        compare(np.zeros((2, 3)), np.zeros((1, 3)), Tolerance(0, 0, 0), lambda o: called.append(o) or [])
    assert called == []


def test_tolerance_of_a_manifest_mapping_keeps_its_values():
    t = Tolerance.of({"rtol": 0, "atol": 1e-5, "max_flip_fraction": 0})
    assert t == Tolerance(0, 1e-5, 0) and isinstance(t.rtol, int)
    assert Tolerance.of(t) is t


# ------------------------------------------------------------------ strict decisions (fidelity's walk)

class Pairs:
    """A measure that keeps what it was fed."""

    def __init__(self):
        self.fed = []

    def update(self, ref, cand):
        self.fed.append((ref, cand))

    def figures(self):
        return {"pairs": len(self.fed)}


def test_strict_decisions_refuse_what_does_not_correspond():
    d = DecisionDiff(lambda key, value: Pairs(), strict=True, context="fidelity", reference_label="fp32")
    a = np.zeros((2, 2), np.uint8)
    d.update({"labels": a}, {"labels": a})
    assert d.figures() == {"labels": {"pairs": 1}} and d.samples == 1
    with pytest.raises(ZooError, match=r"^fidelity: prediction keys differ: \['other'\] vs fp32 \['labels'\]$"):
        d.update({"labels": a}, {"other": a})
    with pytest.raises(ZooError, match=r"^fidelity: prediction 'labels' has shape \(3, 3\), fp32's \(2, 2\)$"):
        d.update({"labels": a}, {"labels": np.zeros((3, 3), np.uint8)})
    with pytest.raises(ZooError, match=r"^fidelity: one prediction is Detections, the other is not$"):
        d.update({"labels": a}, dets())
    assert d.samples == 1
    # not strict (verify): the reference's keys, another shape left to the measure
    lenient = DecisionDiff(lambda key, value: Pairs())
    lenient.update({"labels": a}, {"labels": np.zeros((3, 3), np.uint8), "extra": a})
    assert lenient.figures() == {"labels": {"pairs": 1}}

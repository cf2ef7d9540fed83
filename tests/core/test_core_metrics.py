"""zoo.metrics.BinaryIoU on hand-made 4x4 masks."""
import math

import numpy as np
import pytest

from zoo.metrics import BinaryIoU

S = 1e-5
POS, NEG = 3.0, -3.0   # logits clearly on either side of every threshold used here


def _logits(mask) -> np.ndarray:
    """(1, 4, 4) logits: POS where mask is true, NEG elsewhere."""
    return np.where(np.asarray(mask, bool), POS, NEG).astype(np.float32)[None]


def _samples():
    """Three samples with hand-countable intersections/unions."""
    # 1: prediction = top-left 2x2 block (4 px); target = whole top row (4 px)
    #    I = 2 (row 0, cols 0-1), U = 4 + 4 - 2 = 6
    p1 = np.zeros((4, 4), bool); p1[:2, :2] = True
    t1 = np.zeros((4, 4), np.float32); t1[0, :] = 1
    # 2: empty prediction, empty target: I = 0, U = 0 -> IoU 1 through the smoothing
    p2 = np.zeros((4, 4), bool)
    t2 = np.zeros((4, 4), np.float32)
    # 3: full prediction (16 px), one target pixel: I = 1, U = 16
    p3 = np.ones((4, 4), bool)
    t3 = np.zeros((4, 4), np.float32); t3[2, 3] = 1
    outputs = np.stack([_logits(p1), _logits(p2), _logits(p3)])   # (3, 1, 4, 4)
    return outputs, [t1, t2, t3]


def test_image_aggregate_hand_computed():
    outputs, targets = _samples()
    m = BinaryIoU("guide", "per image")
    m.update(outputs, targets)
    assert m.inter == [2, 0, 1]
    assert m.union == [6, 0, 16]
    expected = ((2 + S) / (6 + S) + (0 + S) / (0 + S) + (1 + S) / (16 + S)) / 3
    r = m.compute()
    assert r["num_samples"] == 3
    assert r["iou"] == pytest.approx(expected, rel=1e-12)
    assert r["iou"] == pytest.approx((1 / 3 + 1 + 1 / 16) / 3, abs=1e-5)   # 0.465278


def test_batch_aggregate_groups_of_two_weighted():
    outputs, targets = _samples()
    m = BinaryIoU("upstream", "per batch", apply_sigmoid=True, aggregate="batch", group=2)
    m.update(outputs, targets)
    g1 = (2 + 0 + S) / (6 + 0 + S)     # samples 1+2 pooled: I = 2, U = 6
    g2 = (1 + S) / (16 + S)            # sample 3 alone
    expected = (2 * g1 + 1 * g2) / 3   # weighted by group sizes 2 and 1
    r = m.compute()
    assert r["num_samples"] == 3
    assert r["iou"] == pytest.approx(expected, rel=1e-12)
    assert r["iou"] == pytest.approx((2 / 3 + 1 / 16) / 3, abs=1e-5)      # 0.243056
    # not the unweighted mean of the groups, nor the per-image mean
    assert r["iou"] != pytest.approx((g1 + g2) / 2, rel=1e-6)


@pytest.mark.parametrize("split", [1, 2])
def test_batch_groups_follow_dataset_order_not_update_calls(split):
    outputs, targets = _samples()
    whole = BinaryIoU("u", "", aggregate="batch", group=2)
    whole.update(outputs, targets)
    parts = BinaryIoU("u", "", aggregate="batch", group=2)
    parts.update(outputs[:split], targets[:split])
    parts.update(outputs[split:], targets[split:])
    assert parts.compute() == whole.compute()


def test_raw_logit_threshold_versus_sigmoid():
    # logit 0.3 everywhere, target all ones
    out = np.full((1, 1, 4, 4), 0.3, np.float32)
    tgt = [np.ones((4, 4), np.float32)]
    raw = BinaryIoU("guide", "", threshold=0.5, apply_sigmoid=False)
    raw.update(out, tgt)                      # 0.3 > 0.5 is false: I = 0, U = 16
    assert raw.inter == [0] and raw.union == [16]
    assert raw.compute()["iou"] == pytest.approx(S / (16 + S), rel=1e-9)
    sig = BinaryIoU("upstream", "", threshold=0.5, apply_sigmoid=True)
    sig.update(out, tgt)                      # sigmoid(0.3) = 0.5744 > 0.5: I = U = 16
    assert 1 / (1 + math.exp(-0.3)) > 0.5
    assert sig.inter == [16] and sig.union == [16]
    assert sig.compute()["iou"] == pytest.approx(1.0)


def test_thresholds_are_strict():
    # raw: a logit of exactly 0.5 is negative; sigmoid: logit 0 -> 0.5 is negative
    out = np.array([0.5, 0.0, 0.51, 1e-3] * 4, np.float32).reshape(1, 1, 4, 4)
    tgt = [np.ones((4, 4), np.float32)]
    raw = BinaryIoU("g", "")
    raw.update(out, tgt)
    assert raw.inter == [4]                   # only the 0.51 column
    sig = BinaryIoU("u", "", apply_sigmoid=True)
    sig.update(out, tgt)
    assert sig.inter == [12]                  # 0.5, 0.51, 1e-3 are > logit(0.5) = 0; 0.0 is not


def test_empty_prediction_and_empty_target_is_one():
    m = BinaryIoU("g", "")
    m.update(np.full((1, 1, 4, 4), -5.0, np.float32), [np.zeros((4, 4), np.float32)])
    assert m.compute()["iou"] == pytest.approx(1.0)


def test_empty_prediction_nonempty_target_is_near_zero():
    m = BinaryIoU("g", "")
    t = np.zeros((4, 4), np.float32); t[1:3, 1:3] = 1            # 4 px
    m.update(np.full((1, 1, 4, 4), -5.0, np.float32), [t])
    assert m.compute()["iou"] == pytest.approx(S / (4 + S), rel=1e-9)


def test_float_targets_use_target_threshold_strictly():
    # every pixel predicted positive; target values straddle 0.5 (0.5 itself is negative)
    t = np.array([[0.0, 0.5, 0.5, 0.51],
                  [1.0, 1.0, 0.49, 0.5],
                  [0.6, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.9]], np.float32)          # > 0.5: 0.51, 1.0, 1.0, 0.6, 0.9 = 5
    m = BinaryIoU("g", "", target_threshold=0.5)
    m.update(np.full((1, 1, 4, 4), POS, np.float32), [t])
    assert m.inter == [5] and m.union == [16]
    assert m.compute()["iou"] == pytest.approx((5 + S) / (16 + S), rel=1e-12)
    m2 = BinaryIoU("g", "", target_threshold=0.0)             # now 0.5 and 0.49 count too
    m2.update(np.full((1, 1, 4, 4), POS, np.float32), [t])
    assert m2.inter == [9]


def test_targets_with_channel_axis_are_accepted():
    outputs, targets = _samples()
    flat = BinaryIoU("g", "")
    flat.update(outputs, targets)
    chw = BinaryIoU("g", "")
    chw.update(outputs, [t[None] for t in targets])          # (1, 4, 4) masks
    assert chw.compute() == flat.compute()


def test_no_samples_and_bad_aggregate():
    r = BinaryIoU("g", "").compute()
    assert r["num_samples"] == 0 and math.isnan(r["iou"])
    with pytest.raises(ValueError):
        BinaryIoU("g", "", aggregate="dataset")

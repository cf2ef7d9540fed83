"""zoo.metrics.binary.BinaryIoU on hand-made 4x4 masks, fed one sample at a time as the run feeds
it: the prediction (a dict of bool masks, what an adapter's postprocess makes) and a bool target.
(How UNet++ turns logits into those masks: tests/models/unetpp/test_unetpp_preprocess.py.)"""
import math

import numpy as np
import pytest

from zoo.metrics.binary import BinaryIoU

S = 1e-5


def _samples():
    """Three (prediction, target) pairs with hand-countable intersections/unions."""
    # 1: prediction = top-left 2x2 block (4 px); target = whole top row (4 px)
    #    I = 2 (row 0, cols 0-1), U = 4 + 4 - 2 = 6
    p1 = np.zeros((4, 4), bool); p1[:2, :2] = True
    t1 = np.zeros((4, 4), bool); t1[0, :] = True
    # 2: empty prediction, empty target: I = 0, U = 0 -> IoU 1 through the smoothing
    p2 = np.zeros((4, 4), bool)
    t2 = np.zeros((4, 4), bool)
    # 3: full prediction (16 px), one target pixel: I = 1, U = 16
    p3 = np.ones((4, 4), bool)
    t3 = np.zeros((4, 4), bool); t3[2, 3] = True
    return [({"m": p1}, t1), ({"m": p2}, t2), ({"m": p3}, t3)]


def _fed(metric, samples):
    for prediction, target in samples:
        metric.update(prediction, target)
    return metric


def test_image_aggregate_hand_computed():
    m = _fed(BinaryIoU("guide", "per image", key="m"), _samples())
    assert m.inter == [2, 0, 1]
    assert m.union == [6, 0, 16]
    expected = ((2 + S) / (6 + S) + (0 + S) / (0 + S) + (1 + S) / (16 + S)) / 3
    r = m.compute()
    assert r["num_samples"] == 3
    assert r["iou"] == pytest.approx(expected, rel=1e-12)
    assert r["iou"] == pytest.approx((1 / 3 + 1 + 1 / 16) / 3, abs=1e-5)   # 0.465278
    assert m.name == "guide" and m.description == "per image" and m.metric == "iou"


def test_batch_aggregate_groups_of_two_weighted():
    m = _fed(BinaryIoU("upstream", "per batch", key="m", aggregate="batch", group=2), _samples())
    g1 = (2 + 0 + S) / (6 + 0 + S)     # samples 1+2 pooled: I = 2, U = 6
    g2 = (1 + S) / (16 + S)            # sample 3 alone
    expected = (2 * g1 + 1 * g2) / 3   # weighted by group sizes 2 and 1
    r = m.compute()
    assert r["num_samples"] == 3
    assert r["iou"] == pytest.approx(expected, rel=1e-12)
    assert r["iou"] == pytest.approx((2 / 3 + 1 / 16) / 3, abs=1e-5)      # 0.243056
    # not the unweighted mean of the groups, nor the per-image mean
    assert r["iou"] != pytest.approx((g1 + g2) / 2, rel=1e-6)


def test_batch_groups_follow_the_sample_order():
    """Groups are consecutive samples in the order they are fed (the source's id order): the same
    samples in another order pool differently; the per-image mean does not care."""
    s = _samples()
    reordered = [s[0], s[2], s[1]]
    a = _fed(BinaryIoU("u", "", key="m", aggregate="batch", group=2), s).compute()
    b = _fed(BinaryIoU("u", "", key="m", aggregate="batch", group=2), reordered).compute()
    g1 = (2 + 1 + S) / (6 + 16 + S)    # samples 1+3 pooled
    assert b["iou"] == pytest.approx((2 * g1 + 1.0) / 3, rel=1e-12)   # sample 2 alone: IoU 1
    assert a["iou"] != pytest.approx(b["iou"], rel=1e-6)
    img = [_fed(BinaryIoU("g", "", key="m"), order).compute() for order in (s, reordered)]
    assert img[0]["iou"] == pytest.approx(img[1]["iou"], rel=1e-12)


def test_one_group_per_sample_is_the_image_mean_and_one_group_pools_everything():
    s = _samples()
    per_image = _fed(BinaryIoU("g", "", key="m"), s).compute()
    ones = _fed(BinaryIoU("u", "", key="m", aggregate="batch", group=1), s).compute()
    assert ones == per_image
    pooled = _fed(BinaryIoU("u", "", key="m", aggregate="batch", group=16), s).compute()
    assert pooled["iou"] == pytest.approx((3 + S) / (22 + S), rel=1e-12)


def test_the_metric_reads_its_own_key_only():
    p = np.zeros((4, 4), bool); p[0, 0] = True
    t = np.zeros((4, 4), bool); t[0, 0] = True
    prediction = {"guide": p, "upstream": ~p}
    g = BinaryIoU("guide", "", key="guide")
    u = BinaryIoU("upstream", "", key="upstream")
    for m in (g, u):
        m.update(prediction, t)
    assert (g.inter, g.union) == ([1], [1]) and (u.inter, u.union) == ([0], [16])
    with pytest.raises(KeyError):
        BinaryIoU("x", "", key="missing").update(prediction, t)


def test_empty_prediction_and_empty_target_is_one():
    m = BinaryIoU("g", "", key="m")
    m.update({"m": np.zeros((4, 4), bool)}, np.zeros((4, 4), bool))
    assert m.compute()["iou"] == pytest.approx(1.0)


def test_empty_prediction_nonempty_target_is_near_zero():
    m = BinaryIoU("g", "", key="m")
    t = np.zeros((4, 4), bool); t[1:3, 1:3] = True            # 4 px
    m.update({"m": np.zeros((4, 4), bool)}, t)
    assert m.compute()["iou"] == pytest.approx(S / (4 + S), rel=1e-9)


def test_non_bool_inputs_count_nonzero_as_positive():
    """A mask read back from a 0/255 PNG or a 0/1 integer target counts like the bool one."""
    (p, t), = _samples()[:1]
    as_bool = _fed(BinaryIoU("g", "", key="m"), [(p, t)]).compute()
    as_ints = _fed(BinaryIoU("g", "", key="m"), [({"m": p["m"].astype(np.uint8) * 255}, t.astype(np.int64))]).compute()
    assert as_ints == as_bool


def test_targets_and_predictions_with_a_channel_axis_are_accepted():
    flat = _fed(BinaryIoU("g", "", key="m"), _samples()).compute()
    chw_target = _fed(BinaryIoU("g", "", key="m"), [(p, t[None]) for p, t in _samples()]).compute()
    chw_pred = _fed(BinaryIoU("g", "", key="m"), [({"m": p["m"][None]}, t) for p, t in _samples()]).compute()
    assert chw_target == flat == chw_pred
    with pytest.raises(ValueError):                           # a different number of pixels
        BinaryIoU("g", "", key="m").update({"m": np.zeros((4, 5), bool)}, np.zeros((4, 4), bool))


def test_no_samples_and_bad_aggregate():
    r = BinaryIoU("g", "", key="m").compute()
    assert r["num_samples"] == 0 and math.isnan(r["iou"])
    with pytest.raises(ValueError):
        BinaryIoU("g", "", key="m", aggregate="dataset")

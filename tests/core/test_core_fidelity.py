"""zoo.metrics.fidelity on constructed predictions: identical predictions give 1.0 for every family
(masks, label maps, detections), and known perturbations give the values computed by hand."""
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.metrics.fidelity import Fidelity
from zoo.predictions import Detections


def _fed(pairs):
    f = Fidelity()
    for cand, ref in pairs:
        f.update(cand, ref)
    return f.report()


def test_masks_identical_and_perturbed():
    ref1 = np.zeros((4, 4), bool)
    ref1[0, :] = True                        # 4 foreground pixels
    empty = np.zeros((4, 4), bool)
    same = _fed([({"m": ref1.copy()}, {"m": ref1}), ({"m": empty.copy()}, {"m": empty})])
    assert same["metric"] == "fidelity_iou" and same["value"] == 1.0 and same["num_samples"] == 2
    cand1 = ref1.copy()
    cand1[0, 3] = False                      # 3 of fp32's 4 pixels ...
    cand1[2, 2] = True                       # ... and one of its own: IoU 3/5
    r = _fed([({"m": cand1}, {"m": ref1}), ({"m": empty.copy()}, {"m": empty})])  # both empty: 1.0
    assert r["value"] == pytest.approx((0.6 + 1.0) / 2)
    assert r["per_key"] == [{"key": "m", "metric": "fidelity_iou", "value": pytest.approx(0.8), "min_image": 0.6}]


def test_label_maps_dataset_miou_over_present_classes_ignoring_255():
    ref = np.array([[0, 0], [1, 1]], np.uint8)
    same = _fed([({"labels": ref.copy()}, {"labels": ref})] * 3)
    assert same["metric"] == "fidelity_miou" and same["value"] == 1.0
    cand = np.array([[0, 1], [1, 1]], np.uint8)
    # class 0: 1 shared pixel, fp32 2, candidate 1 -> 1/2; class 1: 2 shared, fp32 2, candidate 3 -> 2/3
    r = _fed([({"labels": cand}, {"labels": ref})])
    assert r["value"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["per_key"][0]["classes"] == 2 and r["per_key"][0]["pixel_agreement"] == pytest.approx(3 / 4)
    # accumulated over the dataset (not averaged per image); fp32's 255 pixels are left out, and a
    # class only the candidate predicts counts with IoU 0
    ref2 = np.array([[255, 2], [2, 2]], np.uint8)
    cand2 = np.array([[7, 2], [2, 3]], np.uint8)
    r2 = _fed([({"labels": cand}, {"labels": ref}), ({"labels": cand2}, {"labels": ref2})])
    # class 0: 1/2; class 1: 2/3; class 2: 2 shared, fp32 3, candidate 2 -> 2/3; class 3: 0 (class 7 ignored)
    assert r2["value"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3 + 0) / 4)
    assert r2["per_key"][0]["classes"] == 4


def test_two_keys_report_the_lowest_and_mismatches_fail():
    a = np.array([[0, 1]], np.uint8)
    r = _fed([({"labels": a, "labels_trunc": np.array([[1, 1]], np.uint8)}, {"labels": a, "labels_trunc": a})])
    assert {p["key"]: p["value"] for p in r["per_key"]} == {"labels": 1.0, "labels_trunc": pytest.approx(0.25)}
    assert r["value"] == pytest.approx(0.25) and "lowest" in r["description"]
    f = Fidelity()
    with pytest.raises(ZooError, match="keys differ"):
        f.update({"labels": a}, {"other": a})
    with pytest.raises(ZooError, match="shape"):
        f.update({"labels": a}, {"labels": a.T})
    with pytest.raises(ZooError, match="no predictions"):
        Fidelity().report()


def _det(image_id, boxes, scores, cats):
    return Detections.from_boxes(image_id, boxes, scores, cats)


def test_detections_identical_and_one_box_shifted():
    pytest.importorskip("pycocotools")
    ref = [_det(1, [[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 1]),
           _det(2, [[5, 5, 25, 45]], [0.7], [3]),
           _det(3, [], [], [])]
    same = _fed([(Detections(d.image_id, [dict(r) for r in d.rows]), d) for d in ref])
    assert same["metric"] == "fidelity_ap" and same["value"] == pytest.approx(1.0)
    assert same["per_key"][0]["ap50"] == pytest.approx(1.0)
    # image 1's second box moved right by 2: IoU 8/12 = 0.667 with its fp32 box. At the IoU thresholds
    # 0.50..0.65 both category-1 boxes match (AP 1); at 0.70..0.95 only the first does: recall 0.5 at
    # precision 1, i.e. 51 of the 101 recall points (0.00..0.50). Category 3 is matched exactly (AP 1).
    moved = _det(1, [[0, 0, 10, 10], [52, 50, 62, 60]], [0.9, 0.8], [1, 1])
    r = _fed([(moved, ref[0]), (ref[1], ref[1]), (ref[2], ref[2])])
    cat1 = (4 * 1.0 + 6 * 51 / 101) / 10
    assert r["value"] == pytest.approx((cat1 + 1.0) / 2)
    assert r["per_key"][0]["ap50"] == pytest.approx(1.0)
    assert r["per_key"][0]["fp32_detections"] == 3 and r["per_key"][0]["detections"] == 3
    # nothing found where fp32 found something: 0; nothing on either side: 1
    assert _fed([(_det(1, [], [], []), ref[0])])["value"] == 0.0
    assert _fed([(_det(3, [], [], []), ref[2])])["value"] == 1.0
    with pytest.raises(ValueError, match="image 2"):
        Fidelity().update(ref[1], ref[0])

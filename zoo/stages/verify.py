"""The verify stage: a comparator in the spirit of Polygraphy's. The runtime under test and the
PyTorch reference run the same real batch; per output it records the maximum absolute and
relative error, and per prediction (the adapter's postprocess of each sample) the decisions that
flipped: pixels of a label map or mask that differ, detections not matched by a detection of the
same category with IoU >= 0.5. Tolerances come from the manifest per precision
(`verify.tolerance.<precision>`: rtol, atol, max_flip_fraction)."""
from __future__ import annotations

import numpy as np

from zoo.errors import ZooError
from zoo.export import parity
from zoo.predictions import Detections

MATCH_IOU = 0.5


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xywh box of a against every one of b."""
    ax1, ay1, aw, ah = (a[:, i:i + 1] for i in range(4))
    bx1, by1, bw, bh = (b[:, i] for i in range(4))
    iw = np.clip(np.minimum(ax1 + aw, bx1 + bw) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay1 + ah, by1 + bh) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    return inter / np.maximum(aw * ah + bw * bh - inter, 1e-12)


def detection_flips(ref: Detections, cand: Detections, iou: float = MATCH_IOU) -> tuple[int, int]:
    """(detections of either side without a partner, detections compared): greedy matching in
    descending reference score, same category, IoU >= iou."""
    r, c = ref.rows, cand.rows
    if not r or not c:
        return len(r) + len(c), len(r) + len(c)
    rb = np.array([x["bbox"] for x in r], dtype=np.float64)
    cb = np.array([x["bbox"] for x in c], dtype=np.float64)
    same = np.array([x["category_id"] for x in r])[:, None] == np.array([x["category_id"] for x in c])[None, :]
    ious = np.where(same, _box_iou(rb, cb), 0.0)
    used = np.zeros(len(c), dtype=bool)
    matched = 0
    for i in np.argsort([-x["score"] for x in r], kind="stable"):
        cands = np.where(~used & (ious[i] >= iou), ious[i], -1.0)
        j = int(cands.argmax())
        if cands[j] >= iou:
            used[j] = True
            matched += 1
    return len(r) + len(c) - 2 * matched, len(r) + len(c)


def prediction_flips(ref_preds: list, cand_preds: list) -> dict:
    """Decisions that differ between two lists of per-sample predictions, by prediction key."""
    by_key: dict[str, list[int]] = {}
    for rp, cp in zip(ref_preds, cand_preds):
        if isinstance(rp, Detections):
            flips, total = detection_flips(rp, cp)
            counts = by_key.setdefault("detections", [0, 0])
            counts[0] += flips
            counts[1] += total
            continue
        for key, rv in rp.items():
            rv, cv = np.asarray(rv), np.asarray(cp[key])
            counts = by_key.setdefault(key, [0, 0])
            counts[0] += int(np.count_nonzero(rv != cv)) if rv.shape == cv.shape else max(rv.size, cv.size)
            counts[1] += max(rv.size, cv.size)
    return {k: {"flips": f, "decisions": t, "fraction": f / t if t else 0.0} for k, (f, t) in by_key.items()}


def compare(reference: np.ndarray, candidate: np.ndarray, adapter, metas: list, tolerance: dict) -> dict:
    """The reference and candidate outputs of one batch: numeric errors (zoo.export.parity) and the
    decisions of the adapter's predictions. passed = numerics within rtol/atol and every
    prediction key's flipped fraction within max_flip_fraction (numbers within tolerance can still
    cross a threshold)."""
    if np.asarray(reference).shape != np.asarray(candidate).shape:
        raise ZooError(f"verify: output shapes differ: reference {np.shape(reference)}, candidate {np.shape(candidate)}")
    out = parity(reference, candidate, tolerance["rtol"], tolerance["atol"])
    flips = prediction_flips([adapter.postprocess(o, m) for o, m in zip(reference, metas)],
                             [adapter.postprocess(o, m) for o, m in zip(candidate, metas)])
    out["decision_flips"] = sum(v["flips"] for v in flips.values())
    out["decisions"] = flips
    out["max_flip_fraction"] = tolerance["max_flip_fraction"]
    decisions_ok = all(v["fraction"] <= tolerance["max_flip_fraction"] for v in flips.values())
    # an integer output (an argmax inside the graph) is itself a decision: one flipped pixel is a
    # difference of whole classes, which rtol/atol cannot judge; its flips are
    out["numerics_passed"] = decisions_ok if np.asarray(reference).dtype.kind in "biu" else out["passed"]
    out["passed"] = bool(out["numerics_passed"] and decisions_ok)
    return out


def tolerance(manifest, precision: str) -> dict:
    tol = manifest.verify["tolerance"]
    if precision not in tol:
        raise ZooError(f"{manifest.name}: no verify tolerance declared for precision {precision!r} "
                       f"(declared: {', '.join(sorted(tol))})")
    return tol[precision]


def verify_runtime(rt, reference: np.ndarray, batch: np.ndarray, adapter, metas: list, manifest, inp: str, outp: str,
                   precision: str = "fp32", reference_label: str | None = None) -> dict:
    """The runtime under test on the verify batch against the reference outputs of the same batch
    (PyTorch's, or those of a guide's edited graph: zoo.stages.export.verify_reference)."""
    candidate = rt.infer({inp: batch})[outp]
    return {"reference": reference_label or "torch (the loaded PyTorch module, fp32)",
            "candidate": f"{rt.name} {rt.version()}",
            "precision": precision, "batch_size": int(batch.shape[0]),
            **compare(reference, candidate, adapter, metas, tolerance(manifest, precision))}

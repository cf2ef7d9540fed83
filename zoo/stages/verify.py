"""The verify stage, through the one comparator (zoo.comparator, in the spirit of Polygraphy's).
The runtime under test and the PyTorch reference run the same real batch; per output it records
the maximum absolute and relative error, and per prediction (the adapter's postprocess of each
sample) the decisions that flipped: pixels of a label map or mask that differ, detections not
matched by a detection of the same category with IoU >= 0.5. Tolerances come from the manifest
per precision (`verify.tolerance.<precision>`: rtol, atol, max_flip_fraction)."""
from __future__ import annotations

import numpy as np

from zoo import comparator
from zoo.errors import ZooError


def decisions_of(adapter, metas: list):
    """The decision function of the comparator: a batch's outputs -> the adapter's prediction of
    each sample (its postprocess with the sample's meta)."""
    return lambda outputs: [adapter.postprocess(o, m) for o, m in zip(outputs, metas)]


def compare(reference: np.ndarray, candidate: np.ndarray, adapter, metas: list, tolerance: dict) -> dict:
    """The reference and candidate outputs of one batch, as the record's comparison fields: numeric
    errors and the decisions of the adapter's predictions (zoo.comparator.compare). passed =
    numerics within rtol/atol and every prediction key's flipped fraction within
    max_flip_fraction (numbers within tolerance can still cross a threshold)."""
    return comparator.compare(reference, candidate, tolerance, decisions_of(adapter, metas), context="verify").record()


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

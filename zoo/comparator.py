"""The one comparator of two runs of the same inputs, in the spirit of Polygraphy's: a reference
(PyTorch, fp32) and a candidate (a runtime, a reduced precision, a quantized graph), compared on
their outputs (numbers, with tolerances) and on their decisions (the adapter's predictions).
Export parity, the verify stage, the fidelity to fp32 (zoo.metrics.fidelity) and diagnose's
per-layer table all compare through it.

Numbers (`OutputDiff`, streaming over batches; d = candidate - reference, in float64):

  max_abs_diff   max |d|;
  max_rel_diff   max |d| / max |reference| (relative to the output's scale, stable near zero;
                 an all-zero reference has scale 1) -- export parity and verify;
  mean_abs_diff  mean |d|;
  l2_rel_err     ||d|| / ||reference|| (Euclidean norms; 0 when both are zero, inf when only d
                 is) -- diagnose's per-layer table;
  cosine         <reference, candidate> / (||reference|| ||candidate||);
  channel_rel_err(floor)  the mean over channels (axis `channel_axis`) of ||d_c|| / ||reference_c||,
                 channels with less energy than floor x the largest channel's left out;
  worst          where |d| is largest (the index, first of equals, along axis 0 counted over
                 every batch), with both values there.

The two relative errors are different figures, each kept under its own name: one does not
replace the other. The numeric check of a `Tolerance` is Polygraphy's absolute-plus-relative
one with the relative part taken against the output's scale: every |d| <= atol + rtol * max|reference|.

Decisions (`DecisionDiff`, streaming over samples): per prediction key ("detections" for a
zoo.predictions.Detections, else each key of a dict of maps), one measure fed (reference,
candidate) -- by default `FlipCount`: pixels of a map that differ, detections of either side not
matched one to one by a detection of the same category with IoU >= MATCH_IOU; zoo.metrics.fidelity
plugs in its own measures (IoU, mIoU, COCO AP with the reference as ground truth).

`compare` puts the two together for one batch: outputs (one array, or a dict by output name
with per-output tolerances), the decisions of a caller-given function (the adapter's postprocess
of each sample), and passed = every output's numbers within its tolerance and every key's
flipped fraction within max_flip_fraction. An integer output (an argmax inside the graph) is
itself a decision: one flipped pixel is a difference of whole classes, which rtol/atol cannot
judge, so its numeric verdict is the decisions' one."""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from zoo.errors import ZooError
from zoo.predictions import Detections

MATCH_IOU = 0.5
DEFAULT_OUTPUT = "output"   # the name of the output when compare() is given arrays, not dicts


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """rtol and atol of the numbers (every |d| <= atol + rtol * max|reference|), and the fraction
    of decisions allowed to flip per prediction key (None: decisions do not judge). Values are
    kept as given (a record shows the manifest's own numbers)."""
    rtol: float
    atol: float
    max_flip_fraction: float | None = None

    @classmethod
    def of(cls, value: "Tolerance | Mapping") -> "Tolerance":
        """A Tolerance from itself or a manifest's mapping (verify.tolerance.<precision>)."""
        if isinstance(value, Tolerance):
            return value
        return cls(value["rtol"], value["atol"], value.get("max_flip_fraction"))

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * scale


# --- numbers ------------------------------------------------------------------------------------

class OutputDiff:
    """Streaming numeric comparison of one output over batches (module docstring). `context`,
    `labels` and `subject` word the one-line error of a shape mismatch:
    '<context>: <subject> shapes differ: <reference label> (..), <candidate label> (..)'."""

    def __init__(self, context: str = "compare", labels: tuple[str, str] = ("reference", "candidate"),
                 subject: str = "output", channel_axis: int | None = None):
        self.context, self.labels, self.subject, self.channel_axis = context, labels, subject, channel_axis
        self.dtype: np.dtype | None = None     # the reference's, from the first batch
        self.count = 0                          # elements compared
        self.rows = 0                           # entries along axis 0 compared (batches stacked)
        self._max_abs: float | None = None
        self._ref_max: float | None = None
        self._sum_abs = 0.0
        self._worst: dict | None = None
        self.aa = self.bb = self.ab = self.dd = 0.0
        self.chan_aa: np.ndarray | None = None
        self.chan_dd: np.ndarray | None = None

    def check_shapes(self, reference, candidate) -> None:
        if np.shape(reference) != np.shape(candidate):
            what = f"{self.subject} " if self.subject else ""
            raise ZooError(f"{self.context}: {what}shapes differ: {self.labels[0]} {np.shape(reference)}, "
                           f"{self.labels[1]} {np.shape(candidate)}")

    def update(self, reference, candidate) -> "OutputDiff":
        self.check_shapes(reference, candidate)
        if self.dtype is None:
            self.dtype = np.asarray(reference).dtype
        r = np.asarray(reference, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
        diff = np.subtract(c, r)
        np.abs(diff, out=diff)  # |d|, in place: squares below are those of d, bit for bit
        if diff.size:
            i = int(diff.argmax())
            m = float(diff.flat[i])
            if self._max_abs is None or _replaces(m, self._max_abs):
                at = np.unravel_index(i, diff.shape)
                at = (at[0] + self.rows, *at[1:]) if diff.ndim else ()
                self._max_abs = m
                self._worst = {"index": tuple(int(k) for k in at), "reference": float(r.flat[i]),
                               "candidate": float(c.flat[i])}
            ref_max = float(np.abs(r).max())
            if self._ref_max is None or _replaces(ref_max, self._ref_max):
                self._ref_max = ref_max
            self._sum_abs += float(diff.sum())
        elif self._max_abs is None:
            self._max_abs = 0.0
        self.count += diff.size
        self.rows += diff.shape[0] if diff.ndim else 1
        self.aa += float(np.vdot(r, r))
        self.bb += float(np.vdot(c, c))
        self.ab += float(np.vdot(r, c))
        self.dd += float(np.vdot(diff, diff))
        if self.channel_axis is not None and r.ndim > self.channel_axis:
            axes = tuple(k for k in range(r.ndim) if k != self.channel_axis)
            ca, cd = (r * r).sum(axis=axes), (diff * diff).sum(axis=axes)
            self.chan_aa = ca if self.chan_aa is None else self.chan_aa + ca
            self.chan_dd = cd if self.chan_dd is None else self.chan_dd + cd
        return self

    # the figures

    @property
    def max_abs_diff(self) -> float:
        return 0.0 if self._max_abs is None else self._max_abs

    @property
    def scale(self) -> float:
        """max |reference| (1.0 when it is 0: an all-zero reference)."""
        return self._ref_max or 1.0

    @property
    def max_rel_diff(self) -> float:
        return self.max_abs_diff / self.scale

    @property
    def mean_abs_diff(self) -> float:
        return self._sum_abs / self.count if self.count else float("nan")

    @property
    def l2_rel_err(self) -> float:
        if self.aa > 0:
            return float(np.sqrt(self.dd / self.aa))
        return 0.0 if self.dd == 0 else float("inf")

    @property
    def cosine(self) -> float:
        if self.aa > 0 and self.bb > 0:
            return float(self.ab / np.sqrt(self.aa * self.bb))
        return float(self.aa == self.bb)

    def channel_rel_err(self, floor: float) -> float | None:
        if self.chan_aa is None or not self.chan_aa.sum() > 0:
            return None
        keep = self.chan_aa > floor * self.chan_aa.max()
        return float(np.mean(np.sqrt(self.chan_dd[keep] / self.chan_aa[keep])))

    @property
    def worst(self) -> dict | None:
        """{"index", "reference", "candidate"} where |d| is largest (None before any element)."""
        return self._worst

    @property
    def integer(self) -> bool:
        """The reference output holds integers or booleans (a decision itself)."""
        return self.dtype is not None and self.dtype.kind in "biu"

    def within(self, tolerance: Tolerance) -> bool:
        """Every |d| <= atol + rtol * max|reference| (a NaN difference is never within)."""
        return bool(self.max_abs_diff <= tolerance.bound(self.scale))

    def record(self, tolerance: Tolerance) -> dict:
        """The numeric fields of a result record's comparison (schema: comparison)."""
        return {"max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "mean_abs_diff": self.mean_abs_diff, "rtol": tolerance.rtol, "atol": tolerance.atol,
                "passed": self.within(tolerance)}


def _replaces(new: float, old: float) -> bool:
    """Whether a running maximum `old` becomes `new` (NaN, once seen, stays)."""
    return not np.isnan(old) and (np.isnan(new) or new > old)


# --- decisions ----------------------------------------------------------------------------------

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


class FlipCount:
    """Decisions of one prediction key that differ: pixels of a map (a map of another shape: every
    pixel of the larger), or detections without a partner (detection_flips)."""

    def __init__(self):
        self.flips = 0
        self.decisions = 0

    def update(self, reference, candidate) -> None:
        if isinstance(reference, Detections):
            flips, total = detection_flips(reference, candidate)
        else:
            rv, cv = np.asarray(reference), np.asarray(candidate)
            total = max(rv.size, cv.size)
            flips = int(np.count_nonzero(rv != cv)) if rv.shape == cv.shape else total
        self.flips += flips
        self.decisions += total

    def figures(self) -> dict:
        return {"flips": self.flips, "decisions": self.decisions,
                "fraction": self.flips / self.decisions if self.decisions else 0.0}


class DecisionDiff:
    """Streaming comparison of per-sample predictions by key (module docstring): measure_for(key,
    reference value) makes each key's measure (update(reference, candidate), figures()).

    strict=False (verify): the reference's keys are compared, and a map of another shape is the
    measure's to judge. strict=True (fidelity): a Detections against a dict, keys that differ, or
    maps of different shapes are a one-line error naming `context` and the reference's label."""

    def __init__(self, measure_for: Callable[[str, object], object] = lambda key, value: FlipCount(),
                 strict: bool = False, context: str = "compare", reference_label: str = "reference"):
        self.measure_for, self.strict = measure_for, strict
        self.context, self.reference_label = context, reference_label
        self.measures: dict[str, object] = {}
        self.samples = 0

    def _measure(self, key: str, value):
        if key not in self.measures:
            self.measures[key] = self.measure_for(key, value)
        return self.measures[key]

    def update(self, reference, candidate) -> None:
        detections = isinstance(reference, Detections)
        if self.strict and (detections or isinstance(candidate, Detections)):
            if not (detections and isinstance(candidate, Detections)):
                raise ZooError(f"{self.context}: one prediction is Detections, the other is not")
        if detections:
            self._measure("detections", reference).update(reference, candidate)
            self.samples += 1
            return
        if self.strict and set(candidate) != set(reference):
            raise ZooError(f"{self.context}: prediction keys differ: {sorted(candidate)} vs {self.reference_label} "
                           f"{sorted(reference)}")
        for key, ref in reference.items():
            ref, cand = np.asarray(ref), np.asarray(candidate[key])
            if self.strict and cand.shape != ref.shape:
                raise ZooError(f"{self.context}: prediction {key!r} has shape {cand.shape}, "
                               f"{self.reference_label}'s {ref.shape}")
            self._measure(key, ref).update(ref, cand)
        self.samples += 1

    def figures(self) -> dict[str, dict]:
        return {k: m.figures() for k, m in self.measures.items()}


def prediction_flips(ref_preds: list, cand_preds: list) -> dict:
    """Decisions that differ between two lists of per-sample predictions, by prediction key:
    {key: {"flips", "decisions", "fraction"}}."""
    diff = DecisionDiff()
    for rp, cp in zip(ref_preds, cand_preds):
        diff.update(rp, cp)
    return diff.figures()


def flip_fraction(flips: dict) -> float:
    """The largest flipped fraction over the keys of prediction_flips' answer (0.0 for none)."""
    return max((v["fraction"] for v in flips.values()), default=0.0)


# --- both, for one batch ------------------------------------------------------------------------

@dataclasses.dataclass
class Comparison:
    """compare()'s answer: per output its numbers and tolerance, the decisions by key (None when
    no decision function was given), and the verdicts."""
    outputs: dict[str, OutputDiff]
    tolerances: dict[str, Tolerance]
    decisions: dict[str, dict] | None
    max_flip_fraction: float | None

    @property
    def decisions_passed(self) -> bool:
        if self.decisions is None or self.max_flip_fraction is None:
            return True
        return all(v["fraction"] <= self.max_flip_fraction for v in self.decisions.values())

    def numerics_passed(self, name: str) -> bool:
        """The output's numbers within its tolerance; an integer output's verdict is the decisions'
        when decisions were compared (module docstring)."""
        out = self.outputs[name]
        if out.integer and self.decisions is not None:
            return self.decisions_passed
        return out.within(self.tolerances[name])

    @property
    def passed(self) -> bool:
        return all(self.numerics_passed(n) for n in self.outputs) and self.decisions_passed

    @property
    def decision_flips(self) -> int | None:
        return None if self.decisions is None else sum(v["flips"] for v in self.decisions.values())

    @property
    def flip_fraction(self) -> float | None:
        return None if self.decisions is None else flip_fraction(self.decisions)

    def record(self, name: str | None = None) -> dict:
        """The result record's comparison fields (schema: comparison) of one output (default: the
        first): the numbers, then, when decisions were compared, decision_flips, decisions,
        max_flip_fraction, numerics_passed, and passed the whole verdict."""
        name = next(iter(self.outputs)) if name is None else name
        out = self.outputs[name].record(self.tolerances[name])
        if self.decisions is None:
            return out
        out["decision_flips"] = self.decision_flips
        out["decisions"] = self.decisions
        out["max_flip_fraction"] = self.max_flip_fraction
        out["numerics_passed"] = self.numerics_passed(name)
        out["passed"] = bool(out["numerics_passed"] and self.decisions_passed)
        return out


def compare(reference, candidate, tolerance: "Tolerance | Mapping", decide: Callable | None = None,
            per_output: Mapping[str, "Tolerance | Mapping"] | None = None, context: str = "compare",
            labels: tuple[str, str] = ("reference", "candidate")) -> Comparison:
    """Two runs' outputs of the same batch: `reference` and `candidate` one array each, or dicts
    of arrays by output name (the same names). `tolerance` applies to every output unless
    `per_output` names another for it; its max_flip_fraction judges the decisions.
    `decide(outputs)` (optional) turns one side's outputs (as given: the array or the dict) into
    its list of per-sample predictions, the reference's first; decisions are counted by
    prediction_flips. Shapes are checked before any decision is made."""
    tolerance = Tolerance.of(tolerance)
    refs = reference if isinstance(reference, Mapping) else {DEFAULT_OUTPUT: reference}
    cands = candidate if isinstance(candidate, Mapping) else {DEFAULT_OUTPUT: candidate}
    if list(refs) != list(cands):
        raise ZooError(f"{context}: outputs differ: {labels[0]} {list(refs)}, {labels[1]} {list(cands)}")
    unknown = sorted(set(per_output or {}) - set(refs))
    if unknown:
        raise ZooError(f"{context}: tolerance for unknown output(s) {', '.join(unknown)} (outputs: {', '.join(refs)})")
    outputs = {name: OutputDiff(context, labels) for name in refs}
    for name, diff in outputs.items():
        diff.check_shapes(refs[name], cands[name])
    for name, diff in outputs.items():
        diff.update(refs[name], cands[name])
    tolerances = {name: Tolerance.of((per_output or {}).get(name, tolerance)) for name in refs}
    decisions = None
    if decide is not None:
        decisions = prediction_flips(decide(reference), decide(candidate))
    return Comparison(outputs, tolerances, decisions, tolerance.max_flip_fraction)

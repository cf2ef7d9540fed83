"""`python -m zoo diagnose`: when a reduced-precision (int8) model loses accuracy, say where.

The fp32 graph and its int8 QDQ graph run side by side on N real samples (the evaluation split's
first N, preprocessed by the adapter), with every intermediate tensor both graphs share marked as
an output -- Polygraphy's "mark all outputs" comparison, Ascend's accuracy-comparison tooling.
Three answers come out of it:

1. The per-layer table, in topological order: for each shared tensor its producing node and op
   type, the cosine similarity, the relative error ||a-b||/||a|| and the largest absolute error
   over the N samples, and the mean per-channel relative error (below).
2. The first jump (`first_jump`): the first tensor where the error is not inherited but made.
3. The sensitivity ranking (`sensitivity`): how much the final output's error (and the model's
   metric on the N samples) improves when one unit is left in fp32, from one calibration.

What is compared. Both graphs are ONNX Runtime's prepared graph (zoo.quant.ort.prepare: the one
calibration and quantization read, so every name agrees; it is the exported graph with
ONNX Runtime's fp32-exact pre-processing) and its QDQ quantization. In a QDQ graph the original
activation names survive as their producing nodes' outputs, and a quantized tensor T reaches its
consumers as DequantizeLinear(QuantizeLinear(T)); that dequantized value is what the int8 side of
T is taken to be (what the next layer reads), so the table shows the error a tensor's own
quantization adds. (It also keeps the comparison right where the quantizer folds a Relu into the
Q/DQ pair's clamp and the producing Conv's output keeps the Relu's name.) Both sides run with
graph optimisation off, so every tensor exists: the int8 side is then ONNX Runtime's simulation of
its integer kernels (fp32 arithmetic between exact Q/DQ roundings); the final output of the
optimised int8 session (the kernels a run executes) is compared too.

Why a per-channel error as well: a tensor whose norm is dominated by a few huge values (one
outlier channel) keeps a small ||a-b||/||a|| even when per-tensor quantization rounds every other
channel to zero -- the error only shows once a later layer scales the outlier back. The mean over
channels of ||a_c-b_c||/||a_c|| (channels not dead: energy above CHANNEL_FLOOR of the largest) shows it
at the tensor itself.

Units of the sensitivity ranking. ONNX Runtime's QDQ quantizer quantizes a tensor between two
quantized nodes once, for both: leaving one node in fp32 (nodes_to_exclude, what --keep-fp32
does) leaves its weights and arithmetic in fp32 but not the activations it reads or writes when a
neighbour still quantizes them. So two kinds of units are tried, each a --keep-fp32 list:
  node    one compute node (Conv, ConvTranspose, MatMul, Gemm) the QDQ graph quantizes;
  tensor  one quantized activation that feeds a compute node: its quantized producer and
          consumers together, the nodes that must stay in fp32 for it to stay in fp32.
Every variant is quantized from the same ranges (zoo.quant.ort.quantize_with_ranges, no new
calibration) and run with the optimised session on the N samples.

`--auto` (accuracy control) keeps the top-ranked units in fp32, one more at a time, until the int8
model is within the manifest's tolerance (the guides' 1%) of fp32 on the N samples: by the
model's metrics, or, with a random checkpoint (metrics against labels mean nothing), by fidelity
to fp32 (the fraction of the adapter's decisions that flip). It prints the --keep-fp32 list for
`invoke run`. The runtimes diagnosed, and what differs per runtime, are the runtimes' own
(zoo.runtimes: `diagnosed`, `diagnose_note`, the diagnose_auto hook): on OpenVINO the table is
ONNX Runtime's (the same exported graph) and `--auto` is NNCF's quantize_with_accuracy_control
(zoo.quant.ov) with the same 1%."""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from zoo.comparator import OutputDiff, flip_fraction, prediction_flips
from zoo.errors import ZooError

JUMP_THRESHOLD = 0.05      # a first jump's relative error is above this ...
JUMP_FACTOR = 5.0          # ... and at least this many times its inputs' largest
CHANNEL_FLOOR = 1e-12      # channels with less energy than this fraction of the largest channel's (dead
                           # ones) are left out of the channel error; an outlier 10^4 times the others is not
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
DEFAULT_SAMPLES = 8


# --- the two graphs ---------------------------------------------------------------------------

def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output if o}


def seen_by_consumers(qdq_graph) -> dict[str, str]:
    """{tensor: the tensor its consumers read in the QDQ graph}: T -> DequantizeLinear's output
    where T goes through QuantizeLinear -> DequantizeLinear, else T itself (not listed)."""
    dq_of = {n.input[0]: n.output[0] for n in qdq_graph.node if n.op_type == "DequantizeLinear"}
    return {n.input[0]: dq_of[n.output[0]] for n in qdq_graph.node
            if n.op_type == "QuantizeLinear" and n.output[0] in dq_of}


def shared_tensors(fp32_model, qdq_model) -> list[dict]:
    """The tensors to compare, in the fp32 graph's (topological) order: every output of an fp32
    node that the QDQ graph also has (the Q/DQ tensors themselves are the QDQ graph's only), with
    its producing node and op type, `int8_node` (its producer in the QDQ graph: a Conv whose
    Relu the quantizer folded into the Q/DQ clamp), and `qdq`: the QDQ graph's tensor consumers read."""
    prod8 = _producers(qdq_model.graph)
    seen = seen_by_consumers(qdq_model.graph)
    rows = []
    for node in fp32_model.graph.node:
        for out in node.output:
            if out and out in prod8:
                rows.append({"tensor": out, "node": node.name, "op": node.op_type, "int8_node": prod8[out].name,
                             "qdq": seen.get(out, out), "quantized": out in seen})
    return rows


def with_outputs(model, names: list[str]) -> bytes:
    """The serialised model with `names` added as graph outputs (their shape-inferred value info
    where known)."""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    info = {v.name: v for v in (*m.graph.value_info, *m.graph.input, *m.graph.output)}
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(info[name] if name in info else onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return m.SerializeToString()


def session(model, threads: int | None, optimize: bool):
    """A CPU session of a path or serialised model; optimize=False keeps every tensor."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


# --- the comparison ---------------------------------------------------------------------------

def tensor_diff(channel_axis: int | None = 1):
    """The one comparator's streaming numbers (zoo.comparator.OutputDiff) of an fp32 tensor (the
    reference) and its int8 side over several batches; channels along axis 1 (N, C, ...)."""
    return OutputDiff(context="diagnose", labels=("fp32", "int8"), subject="", channel_axis=channel_axis)


def layer_figures(diff: OutputDiff) -> dict:
    """A row's figures (module docstring): cosine, rel_err = ||a-b||/||a|| (the comparator's
    l2_rel_err, not the max-over-scale max_rel_diff of parity and verify), the largest absolute
    error, and the mean channel relative error (channels above CHANNEL_FLOOR)."""
    return {"cosine": diff.cosine, "rel_err": diff.l2_rel_err, "max_abs_err": diff.max_abs_diff,
            "channel_rel_err": diff.channel_rel_err(CHANNEL_FLOOR)}


def compare_layers(fp32_model, qdq_model, batches: list[np.ndarray], input_name: str,
                   threads: int | None = None) -> list[dict]:
    """The per-layer table (module docstring): one row per shared tensor, in topological order."""
    rows = shared_tensors(fp32_model, qdq_model)
    if not rows:
        raise ZooError("diagnose: the fp32 and int8 graphs share no tensor")
    s32 = session(with_outputs(fp32_model, [r["tensor"] for r in rows]), threads, optimize=False)
    s8 = session(with_outputs(qdq_model, [r["qdq"] for r in rows]), threads, optimize=False)
    floats = {o.name for o in s32.get_outputs() if o.type == "tensor(float)"}
    rows = [r for r in rows if r["tensor"] in floats]
    stats = [tensor_diff() for _ in rows]
    for batch in batches:
        a = s32.run([r["tensor"] for r in rows], {input_name: batch})
        b = s8.run([r["qdq"] for r in rows], {input_name: batch})
        for st, x, y in zip(stats, a, b):
            st.update(x, y)
    return [{**r, **layer_figures(st)} for r, st in zip(rows, stats)]


def error(row: dict) -> float:
    """A tensor's error for the jump rule: its relative error or its mean channel error, the larger
    (an outlier-dominated tensor hides its lost channels from the first, module docstring)."""
    return max(row["rel_err"], row["channel_rel_err"] or 0.0)


def upstream_errors(fp32_model, rows: list[dict]) -> dict[str, float]:
    """{tensor: the largest error (`error`) among the compared tensors its producing node reads},
    walking back through tensors that are not compared; graph inputs and weights count 0."""
    err = {r["tensor"]: error(r) for r in rows}
    prod = _producers(fp32_model.graph)
    memo: dict[str, float] = {}

    def reach(name: str) -> float:  # the error a tensor carries: its own, or what its producer read
        if name in err:
            return err[name]
        if name not in memo:
            memo[name] = 0.0  # ends the walk at graph inputs and weights
            node = prod.get(name)
            memo[name] = max((reach(i) for i in node.input if i), default=0.0) if node is not None else 0.0
        return memo[name]

    return {r["tensor"]: max((reach(i) for i in prod[r["tensor"]].input if i), default=0.0) for r in rows}


def first_jump(fp32_model, rows: list[dict], threshold: float = JUMP_THRESHOLD,
               factor: float = JUMP_FACTOR) -> dict | None:
    """The first row, in topological order, whose error is made there rather than inherited:

        e(t) > threshold  and  e(t) >= factor * max(e(i) for i in inputs(t))

    with e = max(relative error, mean channel relative error) (`error`), inputs(t) the tensors the
    producing node of t reads (through tensors that are not compared, back to compared ones;
    graph inputs and weights count 0), and e(i) the error i arrives with, its own quantization
    included. Also `suspect`: of those inputs, the one with the largest e when it is above the
    threshold -- a tensor whose resolution was lost while its relative error stayed small, the
    jump showing only where it is read -- with the node that produced it."""
    ups = upstream_errors(fp32_model, rows)
    by_name = {r["tensor"]: r for r in rows}
    prod = _producers(fp32_model.graph)
    for r in rows:
        if error(r) > threshold and error(r) >= factor * ups[r["tensor"]]:
            inputs = [by_name[i] for i in prod[r["tensor"]].input if i in by_name]
            suspect = max(inputs, key=error, default=None)
            if suspect is not None and error(suspect) <= threshold:
                suspect = None  # no input arrived damaged: the error is made at t
            return {**r, "error": error(r), "inputs_error": ups[r["tensor"]], "threshold": threshold, "factor": factor,
                    "suspect": None if suspect is None else {k: suspect[k] for k in (
                        "tensor", "node", "int8_node", "op", "rel_err", "channel_rel_err", "quantized")}}
    return None


# --- sensitivity ------------------------------------------------------------------------------

def quantized_nodes(qdq_model) -> list[str]:
    """The compute nodes (COMPUTE_OPS) the QDQ graph quantizes: an input comes from a DequantizeLinear."""
    dq_outs = {n.output[0] for n in qdq_model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in qdq_model.graph.node if n.op_type in COMPUTE_OPS and any(i in dq_outs for i in n.input)]


def tensor_units(qdq_model) -> list[dict]:
    """The quantized activations read by a quantized compute node, each with the nodes that
    quantize it -- its producer and every node that reads it dequantized -- as the --keep-fp32
    list that leaves the tensor in fp32. Only those with more than one such node (a single node is
    already a node unit)."""
    q = qdq_model.graph
    compute = set(quantized_nodes(qdq_model))
    prod8 = _producers(q)
    readers: dict[str, list[str]] = {}
    for n in q.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.name)
    units = []
    for tensor, dq in seen_by_consumers(q).items():
        names = [c for c in readers.get(dq, []) if c]
        if not compute & set(names):
            continue
        p = prod8.get(tensor)
        if p is not None and p.op_type not in QDQ_OPS and p.name:
            names.insert(0, p.name)
        names = list(dict.fromkeys(names))
        if len(names) > 1:
            units.append({"kind": "tensor", "tensor": tensor, "keep": names})
    return units


def evaluate(path, batches: list[np.ndarray], input_name: str, output_name: str, reference: list[np.ndarray],
             judge, threads: int | None = None) -> dict:
    """The optimised session of a (QDQ) model on the batches: its final output's error against the
    fp32 `reference` outputs, and judge(outputs) (the metrics and fidelity on the N samples)."""
    s = session(path, threads, optimize=True)
    agree = tensor_diff()
    outs = []
    for batch, ref in zip(batches, reference):
        out = s.run([output_name], {input_name: batch})[0]
        agree.update(ref, out)
        outs.append(out)
    return {"rel_err": agree.l2_rel_err, "cosine": agree.cosine, **judge(np.concatenate(outs))}


def rank_units(units: list[dict], baseline: dict, score) -> list[dict]:
    """Each unit scored (score(unit) -> evaluate()'s dict), with its improvement of the final
    output's relative error over the all-int8 baseline (factor and difference), best first."""
    ranked = []
    for u in units:
        got = score(u)
        ranked.append({**u, **got, "improvement": baseline["rel_err"] - got["rel_err"],
                       "error_ratio": baseline["rel_err"] / got["rel_err"] if got["rel_err"] > 0 else None})
    ranked.sort(key=lambda u: -u["improvement"])
    return ranked


# --- accuracy on the N samples ----------------------------------------------------------------

class Judge:
    """The model's metrics and its fidelity to fp32 on the N samples, from a model's outputs."""

    def __init__(self, adapter, source, metas: list, targets: list, reference: np.ndarray):
        self.adapter, self.source, self.metas, self.targets = adapter, source, metas, targets
        self.ref_preds = self._predictions(reference)
        self.fp32 = self.metrics(reference)

    def _predictions(self, outputs: np.ndarray) -> list:
        return [self.adapter.postprocess(o, m) for o, m in zip(outputs, self.metas)]

    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        ms = self.adapter.metrics(self.source)
        for pred, target in zip(self._predictions(outputs), self.targets):
            for m in ms:
                m.update(pred, target)
        return {m.name: float(m.compute()[m.metric]) for m in ms}

    def __call__(self, outputs: np.ndarray) -> dict:
        flips = prediction_flips(self.ref_preds, self._predictions(outputs))
        return {"metrics": self.metrics(outputs), "flip_fraction": flip_fraction(flips)}

    def score(self, outputs: np.ndarray, indices: list[int], by: str) -> float:
        """One figure, higher is better, for the samples `indices` (NNCF's validation): the first
        metric, or the fraction of decisions equal to fp32's."""
        preds = [self.adapter.postprocess(o, self.metas[i]) for o, i in zip(outputs, indices)]
        if by == "fidelity":
            return 1.0 - flip_fraction(prediction_flips([self.ref_preds[i] for i in indices], preds))
        m = self.adapter.metrics(self.source)[0]
        for pred, i in zip(preds, indices):
            m.update(pred, self.targets[i])
        return float(m.compute()[m.metric])

    def usable_metrics(self) -> bool:
        return bool(self.fp32) and all(np.isfinite(v) and v != 0 for v in self.fp32.values())

    def within(self, got: dict, tolerance: float, by: str) -> bool:
        """metric: every metric's relative drop from fp32 <= tolerance; fidelity: the fraction of
        flipped decisions <= tolerance."""
        if by == "fidelity":
            return got["flip_fraction"] <= tolerance
        return all((ref - got["metrics"][k]) <= tolerance * abs(ref) for k, ref in self.fp32.items())


def auto_keep(ranked: list[dict], start: list[str], baseline: dict, within, score) -> dict:
    """Keep the ranked units in fp32, one more at a time (best first, only units that improved
    the error), until within(score(keep)) holds. {"keep", "steps", "reached"}."""
    keep = list(start)
    if within(baseline):
        return {"keep": keep, "steps": [], "reached": True}
    steps = []
    for unit in ranked:
        if unit["improvement"] <= 0:
            break
        new = keep + [n for n in unit["keep"] if n not in keep]
        if new == keep:
            continue
        keep = new
        got = score(keep)
        steps.append({"added": unit["keep"], "keep": list(keep), **got})
        if within(got):
            return {"keep": keep, "steps": steps, "reached": True}
    return {"keep": keep, "steps": steps, "reached": False}


# --- the command ------------------------------------------------------------------------------

def _auto_by(weights, judge: Judge, asked: str | None) -> str:
    """metric, unless asked otherwise, the checkpoint is a random one (its manifest name says so)
    or the fp32 metrics on the N samples are not usable (zero, NaN)."""
    if asked:
        return asked
    name = ((weights.checkpoint or {}).get("name") or "").lower()
    return "fidelity" if "random" in name or not judge.usable_metrics() else "metric"


def check(cfg, samples: int, out: Path | None = None):
    """The diagnose options checked before any work: the run's checks (zoo.stages.config, on the
    fp32 side: diagnose compares with fp32, and its results folder is made only when the report
    goes there), a runtime that quantizes a graph and a calibrated precision it runs, the
    calibration's (zoo.stages.config.check_calibration), and an --out that is a new file."""
    from zoo.runtimes import diagnosed_runtimes
    from zoo.stages.config import check_calibration, check_config, without_calibration
    known = diagnosed_runtimes()
    if cfg.runtime not in known:
        raise ZooError(f"diagnose: --runtime must be one of {', '.join(known)}, got {cfg.runtime!r}")
    if samples < 1:
        raise ZooError(f"diagnose: --samples must be >= 1, got {samples}")
    if out is not None:
        _check_out(Path(out))
    fp32 = without_calibration(dataclasses.replace(cfg, precision="fp32"))
    manifest, runtime_cls, adapter = check_config(fp32, results_folder=out is None)
    if not runtime_cls.needs_calibration(cfg.precision):
        raise ZooError(f"diagnose: --precision must be a calibrated precision "
                       f"({', '.join(runtime_cls.calibrated_precisions)}), got {cfg.precision!r}")
    problem = runtime_cls.precision_problem(cfg.precision)
    if problem:
        raise ZooError(f"--precision {cfg.precision}: {problem}")
    check_calibration(cfg, manifest, runtime_cls)
    return manifest, runtime_cls, adapter


def _check_out(out: Path) -> None:
    """--out names a new file in a writable folder: an existing file (a result record, an earlier
    report) is never replaced."""
    from zoo.fileutil import check_writable_dir
    from zoo.ids import shown
    if out.is_dir():
        raise ZooError(f"--out {shown(out)}: is a folder (--out is the report's file path)")
    if out.exists() or out.is_symlink():
        raise ZooError(f"--out {shown(out)}: already exists (diagnose writes a new file, never over another)")
    check_writable_dir(out.parent, "report folder")


def _inputs(cfg, manifest, adapter, samples: int, cache: Path):
    """(source of the first N evaluation samples, their inputs stacked, metas, targets)."""
    from zoo.datasets import open_source
    source = open_source(manifest, cfg.data, cfg.ids_file, cfg.limit, cache)
    adapter.check_source(source)
    ids = source.ids[:samples]
    xs, metas, targets = [], [], []
    for sid in ids:
        sample = source.read(sid)
        x, meta = adapter.preprocess(sample)
        xs.append(np.ascontiguousarray(x, dtype=np.float32))
        metas.append(meta)
        targets.append(adapter.target(sample))
    return source.subset(ids), np.stack(xs), metas, targets


def _batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i:i + size] for i in range(0, len(x), size)] if x.ndim else [x]


def diagnose(cfg, samples: int = DEFAULT_SAMPLES, auto: bool = False, out: Path | None = None,
             auto_by: str | None = None, batch: int = 1, log=None) -> tuple[dict, Path]:
    """The whole command: (the report, the JSON path it was written to)."""
    import onnx
    from zoo.paths import cache_dir
    from zoo.quant import ort as q
    from zoo.stages import log as stage_log
    from zoo.stages.compile import calibration_for, keep_fp32_names
    from zoo.stages.export import export_model, torch_outputs
    from zoo.stages.weights import load_model

    say = log or stage_log
    t0 = time.time()
    manifest, runtime_cls, adapter = check(cfg, samples, out)
    cache = cache_dir()
    inp, outp = manifest.input["name"], manifest.output["name"]
    say(f"[1/5] weights, {samples} evaluation samples, export")
    weights, module = load_model(cfg, manifest, adapter)
    source, x, metas, targets = _inputs(cfg, manifest, adapter, samples, cache)
    if adapter.max_batch_size() == 1:
        batch = 1
    reference_torch = torch_outputs(module, x[:manifest.verify["batch_size"]])
    export = export_model(cfg, manifest, adapter, module, weights, x[:manifest.verify["batch_size"]],
                          metas[:manifest.verify["batch_size"]], reference_torch, cache)
    calibration = calibration_for(cfg, runtime_cls, manifest, adapter, cache)
    keep0 = list(keep_fp32_names(cfg.keep_fp32))
    batches = _batches(x, batch)
    report = {"model": manifest.name, "variant": adapter.variant, "runtime": cfg.runtime, "precision": cfg.precision,
              "samples": {"num": len(x), "ids": list(source.ids), "split": "evaluation"},
              "weights": {"path": str(weights.path), "sha256": weights.sha256},
              "export": {"path": export["path"], "onnx_sha256": export["onnx_sha256"]},
              "calibration": calibration.describe(), "keep_fp32": keep0, "tool": q.tool(),
              "criteria": {"jump_threshold": JUMP_THRESHOLD, "jump_factor": JUMP_FACTOR, "channel_floor": CHANNEL_FLOOR}}
    if runtime_cls.diagnose_note:
        report["note"] = runtime_cls.diagnose_note
        say(f"      {report['note']}")
    with tempfile.TemporaryDirectory(prefix="zoo-diagnose-") as tmp:
        tmp = Path(tmp)
        say(f"[2/5] calibrate ({len(calibration)} samples, {calibration.method}) and quantize (QDQ)")
        prepared = q.prepare(Path(export["path"]), tmp / "model.prep.onnx")
        q.check_node_names(prepared, keep0)
        ranges = q.calibrate(prepared, calibration.feeds(q.CALIBRATION_BATCH), calibration.method)
        counter = iter(range(1 << 30))

        def quantize(keep: list[str]) -> Path:
            return q.quantize_with_ranges(prepared, ranges, tmp / f"v{next(counter)}.onnx", nodes_to_exclude=keep)

        qdq_path = quantize(keep0)
        fp32_model, qdq_model = onnx.load(str(prepared)), onnx.load(str(qdq_path))

        say(f"[3/5] per-layer comparison on {len(x)} samples")
        t1 = time.time()
        rows = compare_layers(fp32_model, qdq_model, batches, inp, cfg.threads)
        jump = first_jump(fp32_model, rows)
        report["layers"], report["first_jump"] = rows, jump
        report["seconds_compare"] = round(time.time() - t1, 2)

        s32 = session(prepared, cfg.threads, optimize=True)
        reference = [s32.run([outp], {inp: b})[0] for b in batches]
        judge = Judge(adapter, source, metas, targets, np.concatenate(reference))
        by = _auto_by(weights, judge, auto_by)

        def score(keep: list[str]) -> dict:
            return evaluate(quantize(keep), batches, inp, outp, reference, judge, cfg.threads)

        baseline = evaluate(qdq_path, batches, inp, outp, reference, judge, cfg.threads)
        report["fp32_metrics"], report["int8"] = judge.fp32, baseline
        say(f"[4/5] sensitivity: each unit left in fp32 (int8 final output rel_err {baseline['rel_err']:.3g})")
        t1 = time.time()
        units = [{"kind": "node", "node": n, "keep": [n]} for n in quantized_nodes(qdq_model) if n not in keep0]
        units += [u for u in tensor_units(qdq_model) if not set(u["keep"]) <= set(keep0)]
        ranked = rank_units(units, baseline, lambda u: score(keep0 + [n for n in u["keep"] if n not in keep0]))
        report["sensitivity"] = ranked
        report["seconds_sensitivity"] = round(time.time() - t1, 2)

        tol = manifest.reference.get("tolerance", 0.01)
        report["accuracy_control"] = {"by": by, "tolerance": tol,
                                      "int8_within": judge.within(baseline, tol, by)}
        if auto:
            say(f"[5/5] --auto: keep the top units in fp32 until within {tol:.0%} of fp32 ({by})")
            own = runtime_cls.diagnose_auto(export, calibration, judge, x, inp, by, tol)
            report["auto"] = own if own is not None else auto_keep(ranked, keep0, baseline,
                                                                   lambda g: judge.within(g, tol, by), score)
    report["seconds"] = round(time.time() - t0, 2)
    path = write_report(report, cfg, out)
    return report, path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_report(report: dict, cfg, out: Path | None) -> Path:
    """The JSON report, atomically and as a new file (never over another: a file that appeared
    at --out meanwhile is a one-line error): --out, or
    results/<model>/diagnose-<runtime>-<precision>-<stamp>-<6 hex>.json."""
    from zoo.fileutil import create_new_bytes, create_unique_text
    from zoo.ids import shown
    from zoo.stages.record import stamp
    text = json.dumps(_jsonable(report), indent=1, allow_nan=False) + "\n"
    if out is None:
        stem = f"diagnose-{report['runtime']}-{report['precision']}-{stamp(time.time())}"
        return create_unique_text(Path(cfg.out) / report["model"], stem, lambda name, path: text)
    try:
        create_new_bytes(Path(out), text.encode())
    except FileExistsError:
        raise ZooError(f"--out {shown(out)}: already exists (created while diagnose ran; not replaced)") from None
    return Path(out)


# --- the printed answer -----------------------------------------------------------------------

def _f(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict], jump: dict | None) -> str:
    head = ["#", "tensor", "node", "op", "cosine", "rel_err", "max_abs", "chan_rel", ""]
    lines = [[str(i), r["tensor"], r["node"], r["op"], _f(r["cosine"], ".5f"), _f(r["rel_err"]), _f(r["max_abs_err"]),
              _f(r["channel_rel_err"]), "<- first jump" if jump and r["tensor"] == jump["tensor"] else ""]
             for i, r in enumerate(rows)]
    widths = [min(max(len(x) for x in col), 48) for col in zip(head, *lines)]
    return "\n".join("  ".join(c[:48].ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [head, *lines])


def summary(report: dict, top: int = 10) -> str:
    """The printed answer: first jump, the top units, the accuracy control."""
    out = []
    j = report["first_jump"]
    if j is None:
        out.append(f"first jump: none (no tensor's error exceeds {JUMP_THRESHOLD} and {JUMP_FACTOR:g}x its inputs')")
    else:
        out.append(f"first jump: {j['tensor']} (node {j['node']}, {j['op']}; int8 graph: {j['int8_node']}): "
                   f"rel_err {j['rel_err']:.3g}, channel rel_err {_f(j['channel_rel_err'])}, cosine {j['cosine']:.4f}; "
                   f"its inputs' largest error {j['inputs_error']:.3g}")
        s = j.get("suspect")
        if s:
            out.append(f"  suspect input: {s['tensor']} (node {s['node']}, {s['op']}; int8 graph: {s['int8_node']}): rel_err {s['rel_err']:.3g}, "
                       f"channel rel_err {_f(s['channel_rel_err'])}{' (quantized)' if s['quantized'] else ''}")
    b = report["int8"]
    out.append(f"int8 final output: rel_err {b['rel_err']:.3g}, metrics {_metrics(b['metrics'])} "
               f"vs fp32 {_metrics(report['fp32_metrics'])}, flipped decisions {b['flip_fraction']:.2%}")
    out.append(f"sensitivity (final output rel_err with the unit in fp32; top {top}):")
    for i, u in enumerate(report["sensitivity"][:top], 1):
        what = u["node"] if u["kind"] == "node" else f"{u['tensor']} (keeps {','.join(u['keep'])})"
        out.append(f"  {i:2d}. {u['kind']:<6} {what}: rel_err {u['rel_err']:.3g} "
                   f"(x{_f(u['error_ratio'], '.2f')} better), metrics {_metrics(u['metrics'])}")
    ac = report["accuracy_control"]
    out.append(f"int8 within {ac['tolerance']:.0%} of fp32 ({ac['by']}) on these samples: {ac['int8_within']}")
    a = report.get("auto")
    if a and "steps" in a:
        if not a["steps"] and a["reached"]:
            out.append("--auto: already within the tolerance; nothing to keep in fp32")
        else:
            last = a["steps"][-1] if a["steps"] else {}
            verdict = "reached" if a["reached"] else "NOT reached with every improving unit kept"
            out.append(f"--auto: {verdict} with {len(a['keep'])} node(s) in fp32 (final output rel_err "
                       f"{_f(last.get('rel_err'))}, metrics {_metrics(last.get('metrics') or {})})")
            out.append(f"  invoke run --model {report['model']} --runtime {report['runtime']} --precision "
                       f"{report['precision']} --keep-fp32 {','.join(a['keep'])}")
    if a and a.get("tool", "").startswith("nncf"):
        out.append(f"--auto (NNCF accuracy control, max drop {a['max_drop']:.0%}, {a['by']}): "
                   f"{len(a['reverted'])} operation(s) reverted to floating point: {', '.join(a['reverted']) or 'none'}")
        if a["keep"]:
            out.append(f"  invoke run --model {report['model']} --runtime {report['runtime']} --precision "
                       f"{report['precision']} --keep-fp32 {','.join(a['keep'])}")
    return "\n".join(out)


def _metrics(m: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in m.items()) or "-"


def main(cfg, samples: int, auto: bool, top: int, out: Path | None, auto_by: str | None) -> int:
    """Print the table and the answer; the report's path last (stdout)."""
    if top < 1:  # before any work, as check() does for the rest
        raise ZooError(f"diagnose: --top must be >= 1 (sensitivity units printed), got {top}")
    report, path = diagnose(cfg, samples, auto, out, auto_by)
    print(format_table(report["layers"], report["first_jump"]))
    print()
    print(summary(report, top))
    print(f"seconds: {report['seconds']:.1f} (comparison {report['seconds_compare']:.1f}, "
          f"sensitivity {report['seconds_sensitivity']:.1f})")
    print(path)
    return 0

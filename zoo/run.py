"""One run of one model on one runtime: checkpoint -> ONNX -> compiled model -> dataset ->
batched inference with statistics -> accuracy -> one validated result JSON (written atomically)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoo import RESULT_SCHEMA_VERSION, schema
from zoo.cache import publish_dir, temp_dir_beside
from zoo.errors import ZooError, one_line
from zoo.envinfo import cpu_device, environment
from zoo.export import apply_edit, check_onnx, ensure_onnx, export_key, onnx_io, parity
from zoo.fileutil import check_writable_dir, create_unique_json, file_digest
from zoo.manifest import load_manifest
from zoo.paths import cache_dir
from zoo.pipeline import Stability, check_finite, cpu_ceiling, infer_only, run_pipeline
from zoo.runtimes import ModelArtifacts, get_runtime
from zoo.runtimes.base import default_threads
from zoo.weights import resolve


@dataclass
class RunConfig:
    model: str
    runtime: str = "onnxruntime"   # --runtime (old name: --backend)
    weights: str | None = None
    sha256: str | None = None
    md5: str | None = None
    data: Path | None = None
    ids_file: Path | None = None
    batch_sizes: list[int] | None = None
    limit: int | None = None
    out: Path = Path("results")
    opset: int | None = None
    onnx: Path | None = None
    options: dict = field(default_factory=dict)
    warmup: int = 3
    iterations: int = 20
    time_budget: float | None = 10.0
    threads: int | None = None
    workers: int = 1
    stability: "Stability | None" = field(default_factory=lambda: Stability())
    measure_peak: bool = True
    infer_input: str = "dataset"   # infer_only feeds: dataset | zeros | random (seeded), as ais_bench
    post_workers: int = 1          # postprocessing overlapped with inference on its own thread (0: inline)
    isolate: bool = False          # each batch size in its own child process (zoo.isolate)
    memory_limit_mb: float | None = None  # with isolate: SIGKILL a child above this resident memory
    profile: int = 0               # >0: per-operator profile of each batch size over this many calls (zoo.profile)


def _op_profile(rt, feeds, bs: int, calls: int, cost: dict) -> dict:
    """The infer-only block's `op_profile`: the runtime's per-operator times (a separate
    profiling session, after the timed calls) with the graph's FLOPs per operator type."""
    from zoo.profile import summarize_ops
    try:
        times = rt.op_times(feeds, warmup=1, calls=calls)
    except Exception as exc:  # a profile is extra information: the timed figures stand without it
        _log(f"      bs{bs}: operator profile FAILED: {one_line(exc)[:200]}")
        return {"unavailable": f"profiling failed: {one_line(exc)[:300]}"}
    if times is None:
        return {"unavailable": f"{rt.name}: no per-operator profiler in the zoo for this runtime"}
    prof = summarize_ops(times, calls, bs, cost.get("by_op"), rt.profile_op_names)
    top = ", ".join(f"{r['op_type']} {r['share']:.0%}" + (f" ({r['gflops']:.0f} GFLOP/s)" if "gflops" in r else "")
                    for r in prof["ops"][:4])
    _log(f"      bs{bs}: operator profile over {calls} calls: {top}")
    return prof


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first(out):
    """The main output of a model that may also return auxiliary outputs (a tuple/list)."""
    return out[0] if isinstance(out, (list, tuple)) else out


def _batch(samples: list[np.ndarray], n: int) -> np.ndarray:
    """n samples, cycling when the dataset is smaller than the batch."""
    return np.stack([samples[i % len(samples)] for i in range(n)])


def _infer_feed(mode: str, head: list[np.ndarray], bs: int) -> tuple[np.ndarray, str]:
    """The resident batch of the infer-only timing: real samples, zeros, or seeded random values
    (ais_bench's pure-inference inputs), and its description for the record."""
    if mode == "dataset":
        return _batch(head, bs), "dataset batch (first samples, cycled)"
    shape = (bs, *head[0].shape)
    if mode == "zeros":
        return np.zeros(shape, dtype=np.float32), "zeros"
    if mode == "random":
        return np.random.default_rng(0).standard_normal(shape, dtype=np.float32), "random normal, seed 0"
    raise ZooError(f"--input must be dataset, zeros or random, got {mode!r}")


def _accuracy(metrics_by_bs: dict[int, list], manifest, dataset) -> list[dict]:
    ref = manifest.reference
    first_bs = next(iter(metrics_by_bs))
    subset = dataset.expected is None or len(dataset) != dataset.expected
    blocks = []
    for i, m in enumerate(metrics_by_bs[first_bs]):
        figures = m.compute()
        value = float(figures[m.metric])
        spreads = [abs(float(ms[i].compute()[m.metric]) - value) for ms in metrics_by_bs.values()]
        proto = ref["protocols"].get(m.name)
        block = {"name": m.name, "description": m.description + (" [subset: not comparable to the reference]" if subset else ""),
                 "metric": m.metric, "value": value, "num_samples": int(figures.get("num_samples", len(dataset))),
                 "metrics": {k: (float(v) if v is not None else None) for k, v in figures.items()},
                 "per_class": m.per_class() or [],
                 "batch_size": first_bs, "consistent_across_batch_sizes": max(spreads) <= 1e-4,
                 "max_spread_across_batch_sizes": max(spreads), "reference": None, "passed": None}
        if proto:
            drop = (proto["value"] - value) / proto["value"]
            block["reference"] = {"value": proto["value"], "source": proto["source"], "delta": value - proto["value"],
                                  "relative_drop": drop, "tolerance": ref["tolerance"]}
            comparable = not subset and getattr(m, "comparable", None) is not False
            block["passed"] = bool(drop <= ref["tolerance"]) if comparable else None
        blocks.append(block)
    return blocks


def _device(rt, peak: dict | None) -> dict:
    """The device the runtime ran on (the accelerator, with the host CPU in details, or the CPU)
    and the fp32 peak measured on the host's threads."""
    host = cpu_device(rt.threads)
    dev = rt.device_info() or host
    if dev is not host:
        dev = {**dev, "details": {**dev.get("details", {}), "host": host}}
    return {**dev, **({"fp32_peak": peak} if peak else {})}


def sweep_sizes(cfg: RunConfig, manifest, adapter) -> list[int]:
    """The batch sizes to run: --batch-sizes, or the manifest's sweep cut to what the model's
    variant can stack."""
    batch_sizes = cfg.batch_sizes or manifest.benchmark["batch_sizes"]
    if any(b < 1 for b in batch_sizes):
        raise ZooError(f"batch sizes must be positive, got {batch_sizes}")
    limit_bs = adapter.max_batch_size()
    if limit_bs is not None and not cfg.batch_sizes:  # the manifest's sweep, cut to what is possible
        batch_sizes = [b for b in batch_sizes if b <= limit_bs] or [limit_bs]
    if limit_bs is not None and max(batch_sizes) > limit_bs:
        raise ZooError(f"{manifest.name} ({adapter.variant}): batch sizes above {limit_bs} are not possible "
                       f"(inputs of different sizes cannot be stacked), got {batch_sizes}")
    return batch_sizes


def check_config(cfg: RunConfig):
    """Every run option checked before any work (weights, data, export): one line per problem.
    Returns what the checks built and the run goes on with: (manifest, runtime class, adapter)."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ZooError(msg)
    need(cfg.threads is None or cfg.threads >= 1, f"--threads must be >= 1, got {cfg.threads}")
    need(cfg.workers >= 1, f"--workers must be >= 1, got {cfg.workers}")
    need(cfg.warmup >= 0, f"--warmup must be >= 0, got {cfg.warmup}")
    need(cfg.iterations >= 1, f"--iters must be >= 1, got {cfg.iterations}")
    need(cfg.time_budget is None or cfg.time_budget > 0, f"--time-budget must be > 0 seconds, got {cfg.time_budget}")
    need(cfg.limit is None or cfg.limit >= 1, f"--limit must be positive, got {cfg.limit}")
    need(cfg.profile >= 0, f"--profile takes a number of calls >= 1, got {cfg.profile}")
    need(cfg.post_workers in (0, 1),
         f"--post-workers must be 0 (postprocess on the inference thread) or 1, got {cfg.post_workers}")
    need(cfg.memory_limit_mb is None or cfg.isolate,
         "--memory-limit needs --isolate (the watched process must not be the sweep itself)")
    need(cfg.memory_limit_mb is None or cfg.memory_limit_mb > 0, f"--memory-limit must be > 0 MB, got {cfg.memory_limit_mb}")
    need(not cfg.batch_sizes or all(b >= 1 for b in cfg.batch_sizes), f"batch sizes must be positive, got {cfg.batch_sizes}")
    manifest = load_manifest(cfg.model)
    runtime_cls = get_runtime(cfg.runtime)
    adapter = manifest.adapter(**cfg.options)  # the options, against the manifest's declaration
    from zoo.weights import plan
    plan(cfg.weights, manifest, cfg.sha256, cfg.md5)  # checksum values and where the file comes from; reads nothing
    if cfg.ids_file is not None and not Path(cfg.ids_file).is_file():
        raise ZooError(f"{cfg.ids_file}: ids file not found")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise ZooError(f"{cfg.data}: data folder not found")
    check_writable_dir(Path(cfg.out) / manifest.name, "results folder")
    return manifest, runtime_cls, adapter


def run(cfg: RunConfig, argv: list[str] | None = None) -> Path:
    manifest, runtime_cls, adapter = check_config(cfg)
    if cfg.isolate:
        from zoo.isolate import run_isolated
        return run_isolated(cfg, argv or [])
    t_start = time.time()
    batch_sizes = sweep_sizes(cfg, manifest, adapter)
    cache = cache_dir()
    exp = manifest.export
    inp, outp = manifest.input["name"], manifest.output["name"]

    edit_key = adapter.export_edit_key()
    if edit_key and (not runtime_cls.runs_onnx_graph or cfg.onnx):
        raise ZooError(f"{manifest.name}: the option behind the ONNX edit {edit_key!r} applies to the exported graph "
                       f"only ({cfg.runtime} runs {'a given --onnx file' if cfg.onnx else 'the PyTorch module'}): use a "
                       f"runtime that runs the exported graph (--runtime onnxruntime, openvino, ...) without --onnx, "
                       f"or turn the option off")
    _log(f"[1/6] weights ({cfg.weights or manifest.weights.get('default')})")
    weights = resolve(cfg.weights, manifest, cfg.sha256, cfg.md5)
    module = adapter.build()
    adapter.load_weights(module, weights.path)
    module.eval()

    _log("[2/6] dataset")
    dataset = adapter.dataset(cfg.data, cfg.ids_file, cfg.limit, cache)
    pbs = exp["parity"]["batch_size"]
    head = [dataset.preprocess(dataset.read(i))[0] for i in dataset.ids[:max(batch_sizes + [pbs])]]

    _log("[3/6] export ONNX")
    opset = cfg.opset or exp["opset"]
    if cfg.onnx:
        check_onnx(cfg.onnx)
        ins, outs, file_opset = onnx_io(cfg.onnx)
        if ins != [inp] or outs[:1] != [outp]:
            raise ZooError(f"{cfg.onnx}: inputs {ins} / outputs {outs} do not match the manifest's {inp!r} -> {outp!r}")
        export = {"format": "onnx", "exporter": "user-supplied file", "opset": file_opset, "input_names": ins,
                  "output_names": outs[:1], "dynamic_batch": exp["dynamic_batch"], "path": str(Path(cfg.onnx).resolve()),
                  "onnx_sha256": file_digest(cfg.onnx), "cached": False, "seconds": 0.0, "checker": "full_check_passed"}
    else:
        shape = list(head[0].shape)  # the graph may be specialised to the exported size (e.g. exact pooling)
        key = export_key(weights.sha256, adapter.export_options(), opset, exp["dynamic_batch"], f"{manifest.name}|{shape}")
        meta = {"zoo.model": manifest.name, "zoo.variant": adapter.variant, "zoo.weights_sha256": weights.sha256,
                "zoo.input": inp, "zoo.output": outp, "zoo.input_shape": json.dumps(shape)}
        export = ensure_onnx(module, _batch(head, pbs), cache, key, inp, outp, opset, exp["dynamic_batch"], meta,
                             dynamic_spatial=adapter.dynamic_spatial)

    # Parity: the same batch through PyTorch and a plain ONNX Runtime session of the exported file.
    import onnxruntime as ort
    import torch
    x = _batch(head, pbs)
    with torch.inference_mode():
        ref_out = _first(module(torch.from_numpy(x))).numpy()
    check_finite(ref_out, f"{weights.path}: the PyTorch model's outputs on the first batch",
                 [dataset.ids[i % len(dataset.ids)] for i in range(pbs)])

    def ort_out(path):
        try:
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([outp], {inp: x})[0]
        except Exception as exc:  # e.g. a user-supplied ONNX file for another input size
            raise ZooError(f"{path}: ONNX Runtime cannot run the model on a {list(x.shape)} batch "
                           f"({one_line(exc)[:300]})") from None

    tol = exp["parity"]
    export["parity"] = {"reference": f"torch {torch.__version__}", "candidate": f"onnxruntime {ort.__version__}",
                        "batch_size": pbs, **parity(ref_out, ort_out(export["path"]), tol["rtol"], tol["atol"], adapter.decision)}
    _log(f"      parity max_rel_diff={export['parity']['max_rel_diff']:.2e} passed={export['parity']['passed']}")
    if edit_key:
        # A guide's edit of the exported graph (changes numerics): the runtimes use the edited
        # file; its effect on the outputs of the parity batch is recorded next to the parity.
        edited = Path(export["path"]).with_name(f"model.{edit_key}.onnx")
        info = apply_edit(Path(export["path"]), edited, adapter.edit_onnx)
        export["edit"] = {"name": edit_key, **info, "path": str(edited), "onnx_sha256": file_digest(edited),
                          "effect_vs_torch": parity(ref_out, ort_out(edited), tol["rtol"], tol["atol"], adapter.decision)}
        export["path"] = str(edited)
        _log(f"      edit {edit_key}: {info} -> max_rel_diff vs torch {export['edit']['effect_vs_torch']['max_rel_diff']:.2e}")

    # The model's cost (from the graph the runtimes run) and this machine's fp32 GEMM rate, so
    # each throughput can be read as achieved GFLOP/s and a fraction of the peak.
    try:
        from zoo.cost import onnx_cost
        export["cost"] = {**onnx_cost(Path(export["path"]), list(head[0].shape)), "input_shape": list(head[0].shape)}
    except ZooError as exc:
        _log(f"      cost not counted: {exc}")
    _log(f"[4/6] compile for {cfg.runtime}")
    rt = runtime_cls(cfg.threads)
    arts = ModelArtifacts(onnx_path=Path(export["path"]), input_names=[inp], output_names=[outp],
                          torch_module=module, key=export["onnx_sha256"])
    rt.compile(arts, cache)
    rt.load()

    from zoo.cost import copy_bandwidth, gemm_peak
    peak = None
    if cfg.measure_peak:
        peak = gemm_peak(rt.threads)
        peak["measurements"] = [peak["gflops"]]
        peak["method"] += "; measured again (best of 10) before each batch size, gflops = the highest"
        peak["memory"] = copy_bandwidth()
        _log(f"      fp32 GEMM peak on {rt.threads} threads: {peak['gflops']:.0f} GFLOP/s; memory copy "
             f"{peak['memory']['gbytes_per_s']:.1f} GB/s")
    flops = export.get("cost", {}).get("flops_per_sample")
    act_bytes = export.get("cost", {}).get("activation_bytes")

    def near_peak() -> float | None:
        """The GEMM peak again, just before a batch size is timed: on a shared machine the rate
        drifts within a run, and one short measurement can land in a slow moment. Each block
        records the one of its moment; fractions use the highest of the run (conservative)."""
        if not peak:
            return None
        g = gemm_peak(rt.threads, repeats=10)["gflops"]
        peak["measurements"].append(g)
        peak["gflops"] = max(peak["measurements"])
        return g

    def with_cost(block: dict, block_peak: float | None) -> dict:
        if flops and block.get("status") == "ok":
            block["gflops"] = flops * block["throughput"] / 1e9
            if block_peak:
                block["peak_gflops"] = block_peak  # peak_fraction: after the sweep, vs the run's highest
        if act_bytes and block.get("status") == "ok":  # activations written once (a lower bound of traffic)
            block["activation_gbytes_per_s"] = act_bytes * block["throughput"] / 1e9
            if peak:
                block["bandwidth_fraction"] = block["activation_gbytes_per_s"] / peak["memory"]["gbytes_per_s"]
        return block

    _log(f"[5/6] inference, batch sizes {batch_sizes}, {len(dataset)} samples")
    perf, metrics_by_bs = [], {}
    try:
        for bs in batch_sizes:
            try:
                feed, desc = _infer_feed(cfg.infer_input, head, bs)
                block_peak = near_peak()
                block = infer_only(rt, {inp: feed}, bs, cfg.warmup, cfg.iterations, cfg.time_budget, desc,
                                   cfg.stability)
            except ZooError:
                raise
            except Exception as exc:  # a batch size the runtime cannot run (memory, shape)
                perf.append({"batch_size": bs, "scope": "infer_only", "status": "failed", "error": one_line(exc)[:500]})
                _log(f"      bs{bs}: infer_only FAILED: {one_line(exc)[:200]}")
                continue
            if cfg.profile:
                block["op_profile"] = _op_profile(rt, {inp: feed}, bs, cfg.profile, export.get("cost", {}))
            perf.append(with_cost(block, block_peak))
            metrics = adapter.metrics()
            try:
                pipe = run_pipeline(rt, dataset, bs, inp, outp, metrics, workers=cfg.workers, label=cfg.runtime,
                                    post_workers=cfg.post_workers)
            except ZooError:
                raise
            except Exception as exc:
                perf.append({"batch_size": bs, "scope": "pipeline", "status": "failed", "error": one_line(exc)[:500]})
                continue
            pipe["pipeline_vs_infer"] = pipe["throughput"] / block["throughput"]
            pipe["cpu"]["ceiling"] = cpu_ceiling(pipe, block, default_threads())
            perf.append(with_cost(pipe, block_peak))
            metrics_by_bs[bs] = metrics
            _log(f"      bs{bs}: infer {block['throughput']:.1f}/s, pipeline {pipe['throughput']:.1f}/s "
                 f"({pipe['pipeline_vs_infer']:.0%}" + (f", CPU ceiling {pipe['cpu']['ceiling']['vs_infer']:.0%}"
                                                          if pipe["cpu"]["ceiling"] else "") + "), " + ", ".join(
                     f"{m.name} {m.metric}={m.compute()[m.metric]:.4f}" for m in metrics))
    finally:
        rt.close()
    for block in perf:
        if block.get("gflops") is not None:
            block["peak_fraction"] = block["gflops"] / peak["gflops"] if peak else None
    if not metrics_by_bs:
        raise ZooError(f"{cfg.model}/{cfg.runtime}: every batch size failed; first error: {perf[0].get('error')}")

    _log("[6/6] result")
    t_end = time.time()
    stamp = datetime.fromtimestamp(t_start, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "zoo.result",
        "run_id": f"{manifest.name}-{cfg.runtime}-{stamp}", "status": "ok", "error": None,
        "model": {"name": manifest.name, "title": manifest.title, "variant": adapter.variant, "options": adapter.options},
        "runtime": {"name": rt.name, "version": rt.version(),
                    "settings": {**rt.settings(), "cache": str(cache), "pipeline_workers": cfg.workers,
                                 "postprocess_workers": cfg.post_workers}},
        "device": _device(rt, peak), "precision": "fp32",
        "environment": environment(argv or []),
        "provenance": {"weights": weights.record(), "dataset": dataset.provenance()},
        "export": export,
        "timestamps": {"started": _utc(t_start), "finished": _utc(t_end), "duration_s": round(t_end - t_start, 3)},
        "accuracy": _accuracy(metrics_by_bs, manifest, dataset),
        "perf": perf,
    }
    # run_id = <model>-<runtime>-<start>-<6 hex>, the file <run_id>.json: never over another run's
    return create_unique_json(Path(cfg.out) / manifest.name, record, "run_id", schema.validate)


def write_bins(model: str, data: Path | None, ids_file: Path | None, limit: int | None, options: dict,
               bin_dir: Path) -> Path:
    """Preprocess every sample and write `<id>.bin` (raw float32, CHW) into bin_dir, plus
    `inputs.json` (ids in order, shape, dtype). All or nothing: written to a temporary folder
    that is renamed at the end."""
    bin_dir = Path(bin_dir)
    if bin_dir.exists():
        raise ZooError(f"{bin_dir}: already exists (refusing to mix with other files)")
    manifest = load_manifest(model)
    dataset = manifest.adapter(**options).dataset(data, ids_file, limit, cache_dir())
    tmp = temp_dir_beside(bin_dir)  # unique: concurrent preps never share (or delete) a temporary folder
    try:
        shape = None
        for sid in dataset.ids:
            x, _ = dataset.preprocess(dataset.read(sid))
            x = np.ascontiguousarray(x, dtype=np.float32)
            shape = list(x.shape)
            x.tofile(tmp / f"{sid}.bin")
        (tmp / "inputs.json").write_text(json.dumps({"model": model, "input": manifest.input["name"],
                                                     "shape": shape, "dtype": "float32", "layout": "CHW",
                                                     "ids": dataset.ids}, indent=1))
        publish_dir(tmp, bin_dir)  # fails (nothing mixed) if another prep published bin_dir meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bin_dir

"""Stage 1, config: every run option declared once (`OPTIONS`), and what is derived from it:
`RunConfig` (one field per option), the `python -m zoo run|bench|prep` arguments
(`add_arguments`, `from_namespace`), the invoke tasks' parameters and the command line they pass
on (tasks.py, `to_argv`), the isolated child's config JSON (`to_json`, `from_json`), and the
checks of every option before any work (`check_config`). A new option is one `Option` here.

The runtimes and precisions come from the runtime registry (zoo.runtimes, standard library only
at import too). Standard library only at import: tasks.py imports this on the host (no numpy, no
torch)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import operator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.runtimes import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, runtime_class

REQUIRED = dataclasses.MISSING  # an option without a default: required by the CLI and by RunConfig
RUNS = ("run", "bench", "ab")   # the commands that run a model (they build a RunConfig)


def batch_sizes(text: str) -> list[int]:
    """--batch-sizes: comma-separated positive integers."""
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out or any(b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return out


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE, the value kept as text: the manifest's declaration of the option converts and
    checks it (zoo.options), never a YAML parser."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    if not k.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a key, got {text!r}")
    return k.strip(), v


class _Pairs(argparse.Action):
    """Repeated KEY=VALUE flags collected into one dict (a later KEY wins)."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), value[0]: value[1]})


# kind -> (the CLI text's converter, RunConfig's field type)
KINDS = {
    "text": (str, "str | None"),
    "int": (int, "int | None"),
    "float": (float, "float | None"),
    "path": (Path, "Path | None"),
    "sizes": (batch_sizes, "list[int] | None"),    # 1,4,8
    "pairs": (key_value, "dict"),                  # --option K=V, repeatable
    "switch": (None, "bool"),                      # a flag without a value: sets the opposite of the default
}
_OPS = {">=": operator.ge, ">": operator.gt, "<": operator.lt}


@dataclasses.dataclass(frozen=True)
class Option:
    """One run option. `flags`: its name first, then old names that still work (in the CLI, in
    invoke and as a key of an isolate config). `task`: how an invoke task passes it on --
    "value" (the text as given), "path" (made absolute: the model process runs in the repo root;
    not with --docker, whose container sees only --data, --weights and --out), "own" (the task's
    own parameter: model, weights, data, out). `bounds`: ((">=", 1), ...) checked by
    check_config, named in its message (`unit` after the number). `const`: the value of the flag
    given alone (argparse nargs="?", invoke's optional value). `commands`: the zoo commands that
    take it."""
    field: str
    flags: tuple[str, ...]
    kind: str = "text"
    default: Any = None
    help: str = ""
    choices: tuple = ()
    bounds: tuple = ()
    unit: str = ""
    const: Any = None
    metavar: str | None = None
    task: str = "value"
    commands: tuple[str, ...] = RUNS

    @property
    def flag(self) -> str:
        return self.flags[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The Python names of the flags (invoke's parameters, an isolate config's old keys)."""
        return tuple(f[2:].replace("-", "_") for f in self.flags)

    def add_to(self, parser: argparse.ArgumentParser, typed_only: bool = False) -> None:
        """The option in an argparse parser; `typed_only`: no default (the namespace then holds
        only what was typed, a default value typed explicitly included: zoo.cli.typed_fields)."""
        kw: dict[str, Any] = {"dest": self.field, "help": self.help}
        if self.default is REQUIRED:
            kw["required"] = True
        elif typed_only:
            kw["default"] = argparse.SUPPRESS
        else:
            kw["default"] = self.default() if callable(self.default) else self.default
        if self.kind == "switch":
            kw["action"] = "store_false" if self.default else "store_true"
        else:
            kw["type"] = KINDS[self.kind][0]
            if self.kind == "pairs":
                kw["action"] = _Pairs
            if self.choices:
                kw["choices"] = list(self.choices)
            if self.const is not None:
                kw.update(nargs="?", const=self.const)
            if not self.choices:  # argparse shows the choices themselves
                kw["metavar"] = self.metavar or self.names[0].upper()
        parser.add_argument(*self.flags, **kw)

    def argv(self, value, given: bool = False) -> list[str]:
        """The command-line words that give `value` (typed, or text as invoke passes it); none
        for None, nor for the default unless `given` (a value the user gave is always passed on:
        the command it goes to may have another default, diagnose's --precision int8)."""
        if value is None or (value == self.default and not given):
            return []
        if self.kind == "switch":
            return [self.flag] if bool(value) != bool(self.default) else []
        if self.kind == "pairs":
            items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else list(value)
            return [w for item in items for w in (self.flag, str(item))]
        if self.kind == "sizes" and not isinstance(value, str):
            value = ",".join(str(b) for b in value)
        return [self.flag, str(value)]

    def problem(self, value) -> str | None:
        """What is wrong with a value of a RunConfig (None: nothing)."""
        if value is None or self.kind in ("switch", "pairs", "sizes"):
            return None
        if self.choices and value not in self.choices:
            return f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.kind == "float" and math.isinf(value):  # inf passes '> 0': a budget never spent (nan fails the bounds)
            return f"{self.flag} must be a finite number{' of ' + self.unit if self.unit else ''}, got {value}"
        if not all(_OPS[op](value, limit) for op, limit in self.bounds):
            rule = " and ".join(f"{op} {limit}" for op, limit in self.bounds)
            return f"{self.flag} must be {rule}{' ' + self.unit if self.unit else ''}, got {value}"
        return None


OPTIONS: tuple[Option, ...] = (
    Option("model", ("--model",), default=REQUIRED, task="own", commands=(*RUNS, "prep"),
           help="model name, e.g. unetpp (`python -m zoo models` lists them)"),
    Option("runtime", ("--runtime", "--backend"), default=DEFAULT_RUNTIME, commands=("run",),
           help=", ".join(name + (" (default)" if name == DEFAULT_RUNTIME else "") for name in RUNTIMES)
                + " (--backend: the old name of this option)"),
    Option("precision", ("--precision",), default="fp32", choices=PRECISIONS,
           help="the precision the runtime runs (fp32 default; bf16: OpenVINO, PyTorch autocast; int8: ONNX Runtime "
                "QDQ, OpenVINO NNCF, calibrated on the calibration split): one "
                "the runtime cannot run is an error, never a fallback; the executed one is read back and recorded"),
    Option("calib_ids", ("--calib-ids",), "path", task="path",
           help="int8: ids of the calibration samples (default: the manifest's calibration split)"),
    Option("calib_size", ("--calib-size",), "int", default=32, bounds=((">=", 1),),
           help="int8: calibration samples, a seeded subset of the calibration split kept in its order (default: 32)"),
    Option("calib_method", ("--calib-method",), default="minmax", choices=("minmax", "entropy", "percentile"),
           help="int8: activation-range method of the calibration (ONNX Runtime; default: minmax)"),
    Option("calib_seed", ("--calib-seed",), "int", default=0, bounds=((">=", 0),),
           help="int8: seed of the calibration subset (default: 0)"),
    Option("calib_from_eval", ("--calib-from-eval",), "switch", default=False,
           help="int8: calibrate on the evaluation split (when no calibration split exists; the record marks it)"),
    Option("keep_fp32", ("--keep-fp32",), metavar="LAYERS",
           help="int8: comma-separated ONNX node names left in higher precision (from `invoke diagnose`; "
                "default: none)"),
    Option("fp32_baseline", ("--no-fp32-baseline",), "switch", default=True,
           help="a reduced-precision run skips its fp32 pass over the same samples (then no accuracy delta, "
                "fidelity or in-run speed-up is recorded)"),
    Option("weights", ("--weights",), task="own",
           help="checkpoint: a manifest checkpoint name, a file, or an http(s) URL (default: the manifest's)"),
    Option("sha256", ("--sha256",),
           help="expected sha256 of --weights (verified; required with a URL unless --md5; default: the manifest's "
                "checksums of its checkpoints)"),
    Option("md5", ("--md5",), help="expected md5 of --weights (default: the manifest's checksums of its checkpoints)"),
    Option("data", ("--data",), "path", task="own", commands=(*RUNS, "prep"),
           help="dataset root in its original layout (default: the built-in sample)"),
    Option("ids_file", ("--ids-file",), "path", task="path", commands=(*RUNS, "prep"),
           help="ids of the split to evaluate (default: the manifest's)"),
    Option("batch_sizes", ("--batch-sizes",), "sizes", help="e.g. 1,4,8,16,32,64 (default: the manifest's)"),
    Option("limit", ("--limit",), "int", bounds=((">=", 1),), commands=(*RUNS, "prep"),
           help="only the first N samples (accuracy then not compared; default: every sample)"),
    Option("out", ("--out",), "path", default=Path("results"), task="own",
           help="results folder (default: results)"),
    Option("opset", ("--opset",), "int", help="ONNX opset (default: the manifest's; 11 for the guides' ATC)"),
    Option("onnx", ("--onnx",), "path", task="path",
           help="use this ONNX file instead of exporting (default: export the checkpoint)"),
    Option("options", ("--option",), "pairs", default=dict, metavar="KEY=VALUE", commands=(*RUNS, "prep"),
           help="model option, e.g. upsample=nearest (the guide's patch); repeatable; `python -m zoo models` "
                "lists each model's and its default"),
    Option("warmup", ("--warmup",), "int", default=3, bounds=((">=", 0),),
           help="untimed calls before the timed ones, per batch size (default: 3)"),
    Option("iterations", ("--iters",), "int", default=1000, bounds=((">=", 1),),
           help="timed calls per batch size (infer_only), at most (default: 1000; the time budget usually "
                "ends the timing first)"),
    Option("time_budget", ("--time-budget",), "float", default=10.0, bounds=((">", 0),), unit="seconds",
           help="seconds of timed calls per batch size, at most (default: 10)"),
    Option("min_duration", ("--min-duration",), "float", default=1.0, bounds=((">=", 0),), unit="seconds",
           help="seconds of timed calls before the timing may stop as stable (LoadGen's minimum duration; default: 1)"),
    Option("min_calls", ("--min-calls",), "int", default=0, bounds=((">=", 0),),
           help="timed calls before the timing may stop as stable (LoadGen's minimum query count; default: 0, "
                "i.e. three windows)"),
    Option("stable_tolerance", ("--stable-tolerance",), "float", default=0.02, bounds=((">=", 0), ("<", 1)),
           help="stop timing once the 95 percent interval of the throughput is within this relative half-width "
                "(default: 0.02, i.e. +-2 percent; 0: never stop early); a figure that does not get there is UNSTABLE"),
    Option("stable_window", ("--stable-window",), "int", default=0, bounds=((">=", 0),),
           help="timed calls per window; the interval is taken over the windows (default: 0, automatic: about "
                "0.25 s of calls, at least one)"),
    Option("threads", ("--threads",), "int", bounds=((">=", 1),), help="intra-op threads (default: the cores available)"),
    Option("workers", ("--workers",), "int", default=1, bounds=((">=", 1),), help="read/preprocess threads in the pipeline"),
    Option("infer_input", ("--input", "--infer-input"), default="dataset", choices=("dataset", "zeros", "random"),
           help="infer-only timing input: real samples (default), zeros, or seeded random (ais_bench style)"),
    Option("measure_peak", ("--no-peak",), "switch", default=True, help="skip measuring the fp32 GEMM peak"),
    Option("post_workers", ("--post-workers",), "int", default=1, choices=(0, 1),
           help="postprocessing threads overlapped with inference (0: on the inference thread)"),
    Option("isolate", ("--isolate",), "switch", default=False,
           help="run each batch size in its own process: a batch size killed (out of memory) is recorded "
                "as failed and the sweep goes on"),
    Option("memory_limit_mb", ("--memory-limit",), "float", bounds=((">", 0),), unit="MB", metavar="MB",
           help="with --isolate: kill a batch size whose resident memory exceeds this many MB (recorded as failed; "
                "default: no limit)"),
    Option("profile", ("--profile",), "int", default=0, const=5, bounds=((">=", 0),), metavar="CALLS",
           help="per-operator profile of each batch size (ONNX Runtime's profiler, OpenVINO's counters) "
                "over this many calls (5 when the flag is given alone), after and apart from the timed calls"),
    Option("shards", ("--shards",), "int", bounds=((">=", 1),), commands=("run",),
           help="split the dataset into N contiguous shards, each run by a Ray actor holding the compiled model "
                "(one per device or CPU slot); the metrics merge exactly (zoo.shard; default: no sharding)"),
    Option("cluster", ("--cluster",), commands=("run",), metavar="local|auto|ADDRESS",
           help="with --shards: the Ray cluster: local (default: started here, stopped at the end), auto "
                "(RAY_ADDRESS or a running cluster), or an address (ray://HOST:10001, HOST:6379)"),
    Option("devices", ("--devices",), commands=("run",), metavar="IDS",
           help="with --shards: the device ids the shards use (e.g. 0,1,2,3): Ray's k-th device of the shard "
                "resource on a node is device IDS[k]; made visible to that actor only (default: Ray's ids are the device numbers)"),
    Option("shard_resource", ("--shard-resource",), commands=("run",), metavar="NAME",
           help="with --shards: the Ray resource one shard takes a unit of (default: NPU for ascend, GPU for the "
                "CUDA runtimes, none (CPU slots) otherwise); e.g. NPU to place CPU shards by fake devices"),
    Option("shard_retries", ("--shard-retries",), "int", default=2, bounds=((">=", 0),), commands=("run",),
           help="with --shards: times a shard whose worker died (killed, out of memory) is run again (default: 2)"),
    Option("scaling_reference", ("--no-scaling-reference",), "switch", default=True, commands=("run",),
           help="with --shards: skip the one-shard reference run (shard 0 on one actor with all the threads, or one "
                "device) that the scaling efficiency is measured against"),
    Option("save_predictions", ("--save-predictions",), "switch", default=False,
           help="keep compact predictions with the result, for `invoke score` (the accuracy recomputed "
                "without inference)"),
)


# `python -m zoo diagnose` (zoo/diagnose.py): the run options that decide the compared models
DIAGNOSE = ("model", "runtime", "precision", "calib_ids", "calib_size", "calib_method", "calib_seed", "calib_from_eval",
            "keep_fp32", "weights", "sha256", "md5", "data", "ids_file", "opset", "onnx", "options", "threads")


def options(command: str = "run") -> list[Option]:
    """The declared options the zoo command `command` takes, in declaration order."""
    if command == "diagnose":
        return [o for o in OPTIONS if o.field in DIAGNOSE]
    return [o for o in OPTIONS if command in o.commands]


def option(field: str) -> Option:
    return next(o for o in OPTIONS if o.field == field)


DEFAULT_TOLERANCE = 0.02  # the relative half-width a figure is judged against when stop-when-stable is off


def _stability(cfg):
    """The stop-when-stable setting of the timing (zoo.pipeline.Stability), None when
    --stable-tolerance is 0 (the interval is still computed, against the default tolerance)."""
    if not cfg.stable_tolerance:
        return None
    from zoo.pipeline import Stability
    return Stability(window=cfg.stable_window, tolerance=cfg.stable_tolerance, min_duration_s=cfg.min_duration,
                     min_calls=cfg.min_calls)


def _timing(cfg):
    """The timing settings even when stop-when-stable is off (the interleaved A/B always judges
    its interval): _stability's, with the default tolerance."""
    from zoo.pipeline import Stability
    return cfg.stability or Stability(window=cfg.stable_window, tolerance=cfg.interval_tolerance,
                                      min_duration_s=cfg.min_duration, min_calls=cfg.min_calls)


def make_run_config(declared: tuple[Option, ...]) -> type:
    """The dataclass of a run's settings: one field per declared option, in order."""
    fields = []
    for o in declared:
        kind = KINDS[o.kind][1] if o.default is None else KINDS[o.kind][1].replace(" | None", "")
        if o.default is REQUIRED:
            fields.append((o.field, kind))
        else:
            fields.append((o.field, kind, dataclasses.field(default_factory=o.default) if callable(o.default)
                           else dataclasses.field(default=o.default)))
    return dataclasses.make_dataclass("RunConfig", fields, namespace={
        "stability": property(_stability), "timing": property(_timing), "__module__": __name__,
        "interval_tolerance": property(lambda cfg: cfg.stable_tolerance or DEFAULT_TOLERANCE),
        "__doc__": "One run's settings: a field per declared option (zoo.stages.config.OPTIONS)."})


RunConfig = make_run_config(OPTIONS)


def add_arguments(parser: argparse.ArgumentParser, command: str, typed_only: bool = False) -> None:
    for o in options(command):
        o.add_to(parser, typed_only)


def from_namespace(args: argparse.Namespace, **fixed) -> RunConfig:
    """The RunConfig of parsed `python -m zoo run|bench` arguments (`fixed` wins: bench's runtime
    and precision of each side-by-side run)."""
    return RunConfig(**{**{o.field: getattr(args, o.field) for o in OPTIONS if hasattr(args, o.field)}, **fixed})


def to_argv(values, command: str = "run", given: bool = False) -> list[str]:
    """The `python -m zoo <command>` words that give these values: a RunConfig, or a mapping of
    field names to values (typed, or text as given to invoke). `given`: the values are what the
    user gave (an invoke task's), each passed on even when it equals the run option's default."""
    if not isinstance(values, Mapping):
        values = {o.field: getattr(values, o.field) for o in OPTIONS}
    return [w for o in options(command) for w in o.argv(values.get(o.field), given)]


def to_json(cfg) -> str:
    """The config as JSON (the isolate child's): every field, paths as text."""
    return json.dumps({o.field: getattr(cfg, o.field) for o in OPTIONS}, default=str)


def from_json(text: str) -> RunConfig:
    """A RunConfig from to_json's text; a key may be an option's old name ("backend": a config
    written before --backend became --runtime)."""
    by_key = {key: o for o in OPTIONS for key in (o.field, *o.names[1:])}
    values: dict[str, Any] = {}
    for key, value in json.loads(text).items():
        o = by_key.get(key)
        if o is None:
            raise ZooError(f"run config: unknown setting {key!r}")
        if o.kind == "path" and value is not None:
            value = Path(value)
        if key == o.field or o.field not in values:  # the current name wins over an old one
            values[o.field] = value
    return RunConfig(**values)


def sweep_sizes(cfg: RunConfig, manifest, adapter) -> list[int]:
    """The batch sizes to run: --batch-sizes, or the manifest's sweep cut to what the model's
    variant can stack."""
    batch_sizes = cfg.batch_sizes or manifest.benchmark["batch_sizes"]  # both positive: check_config, the schema
    limit_bs = adapter.max_batch_size()
    if limit_bs is not None and not cfg.batch_sizes:  # the manifest's sweep, cut to what is possible
        batch_sizes = [b for b in batch_sizes if b <= limit_bs] or [limit_bs]
    if limit_bs is not None and max(batch_sizes) > limit_bs:
        raise ZooError(f"{manifest.name} ({adapter.variant}): batch sizes above {limit_bs} are not possible "
                       f"(inputs of different sizes cannot be stacked), got {batch_sizes}")
    return batch_sizes


def _check_sharding(cfg: RunConfig) -> None:
    """The --shards options: the others need --shards, and what a sharded run does not do is refused."""
    sharding = ("cluster", "devices", "shard_resource")
    if not getattr(cfg, "shards", None):
        given = [option(f).flag for f in sharding if getattr(cfg, f, None)]
        if given:
            raise ZooError(f"{', '.join(given)} needs --shards")
        return
    for field, why in (("isolate", "each shard already runs in its own worker process"),
                       ("save_predictions", "predictions are kept by single-process runs only"),
                       ("profile", "operator profiles are taken by single-process runs only")):
        if getattr(cfg, field):
            raise ZooError(f"--shards and {option(field).flag} cannot be combined ({why})")
    if cfg.precision != "fp32" and cfg.fp32_baseline:
        raise ZooError(f"--shards with --precision {cfg.precision} needs --no-fp32-baseline "
                       f"(the fp32 baseline pass is single-process)")
    if cfg.devices is not None:
        ids = [d.strip() for d in cfg.devices.split(",")]
        if not all(d.isdigit() for d in ids) or len(set(ids)) != len(ids):
            raise ZooError(f"--devices must be distinct comma-separated device numbers, got {cfg.devices!r}")


# The options that only a calibrated precision (int8) reads; --keep-fp32 also a precision whose
# graph the runtime converts (Runtime.converted_precisions: onnxruntime-cuda's fp16). Given to a
# run that does not read them, they are refused: a record must not look as if they had been applied.
CALIBRATION = ("calib_ids", "calib_size", "calib_method", "calib_seed", "calib_from_eval", "keep_fp32")
# The precisions the built-in runtimes calibrate (Runtime.calibrated_precisions of those that run them).
CALIBRATED_PRECISIONS = tuple(p for p in PRECISIONS
                              if any(p in cls.precisions and cls.needs_calibration(p) for cls in RUNTIMES.values()))


def _reads(runtime_cls, precision: str, field: str) -> bool:
    """Whether a run of `precision` on `runtime_cls` reads the calibration option `field`."""
    return runtime_cls.reads_keep_fp32(precision) if field == "keep_fp32" else runtime_cls.needs_calibration(precision)


def reads_calibration(runtime: str, precision: str, field: str) -> bool:
    """Whether a run of `precision` on the registered runtime `runtime` reads the calibration
    option `field` (host side: invoke matrix gives a job the calibration options only then)."""
    return _reads(runtime_class(runtime), precision, field)


def without_calibration(cfg: RunConfig) -> RunConfig:
    """cfg with the calibration options at their defaults (a pass that does not calibrate: the
    fp32 side of bench and diagnose)."""
    return dataclasses.replace(cfg, **{f: option(f).default for f in CALIBRATION})


def unused_calibration_option(fields, runtime_cls, precisions) -> str | None:
    """Why the first of `fields` (calibration options) has no effect on these precisions of this
    runtime, or None when each is read by one of them."""
    for field in (f for f in CALIBRATION if f in set(fields)):
        used = [p for p in precisions if _reads(runtime_cls, p, field)]
        if not used:
            which = ", ".join(runtime_cls.calibrated_precisions) or "no precision"
            return (f"{option(field).flag} has no effect: --precision {'/'.join(precisions)} on {runtime_cls.name} "
                    f"is not calibrated (only {which} is); leave it out")
    return None


def check_calibration(cfg: RunConfig, manifest, runtime_cls) -> None:
    """The calibration options before any work: an option that would not be read (set to another
    value than its default: zoo.cli also refuses one typed with its default value), a missing
    --calib-ids, --calib-from-eval with --calib-ids, and calibration ids that are evaluation ids of
    this run (zoo.quant.calibration_set.check_disjoint)."""
    problem = unused_calibration_option([f for f in CALIBRATION if getattr(cfg, f) != option(f).default],
                                        runtime_cls, [cfg.precision])
    if problem:
        raise ZooError(problem)
    if cfg.calib_ids is not None and cfg.calib_from_eval:
        raise ZooError("--calib-from-eval and --calib-ids exclude each other (--calib-from-eval calibrates on "
                       "the evaluation split itself)")
    if cfg.calib_ids is not None and not Path(cfg.calib_ids).is_file():
        from zoo.ids import shown
        raise ZooError(f"--calib-ids {shown(cfg.calib_ids)}: calibration ids file not found")
    if runtime_cls.needs_calibration(cfg.precision) and not cfg.calib_from_eval:
        from zoo.quant.calibration_set import check_disjoint
        check_disjoint(manifest, cfg.data, cfg.ids_file, cfg.limit, cfg.calib_ids)


def check_values(values, command: str) -> None:
    """The declared bounds and choices of a command's options (parsed arguments or a RunConfig):
    `prep`, which builds no RunConfig, is checked with them too before any work."""
    for o in options(command):
        problem = o.problem(getattr(values, o.field, None))
        if problem:
            raise ZooError(problem)


def check_config(cfg: RunConfig, results_folder: bool = True):
    """Every run option checked before any work (weights, data, export): one line per problem.
    Returns what the checks built and the run goes on with: (manifest, runtime class, adapter).
    `results_folder` False: the results folder is not made (diagnose writing its --out elsewhere)."""
    from zoo.fileutil import check_writable_dir
    from zoo.manifest import load_manifest
    from zoo.runtimes import get_runtime
    from zoo.checkpoints import plan

    for o in OPTIONS:
        problem = o.problem(getattr(cfg, o.field))
        if problem:
            raise ZooError(problem)
    if cfg.memory_limit_mb is not None and not cfg.isolate:
        raise ZooError("--memory-limit needs --isolate (the watched process must not be the sweep itself)")
    if cfg.batch_sizes and not all(b >= 1 for b in cfg.batch_sizes):
        raise ZooError(f"batch sizes must be positive, got {cfg.batch_sizes}")
    _check_sharding(cfg)
    manifest = load_manifest(cfg.model)
    runtime_cls = get_runtime(cfg.runtime)
    if cfg.shards:  # --cluster, --devices, --shards vs --limit (zoo.shard_options; Ray is not imported)
        from zoo.shard_options import check_options
        check_options(cfg, runtime_cls)
    problem = runtime_cls.precision_problem(cfg.precision)
    if problem:
        raise ZooError(f"--precision {cfg.precision}: {problem}")
    from zoo.stages.verify import tolerance
    try:
        tolerance(manifest, cfg.precision)  # the verify stage's own lookup, before any work
    except ZooError as exc:
        raise ZooError(f"--precision {cfg.precision}: {exc}") from None
    adapter = manifest.adapter(**cfg.options)  # the options, against the manifest's declaration
    plan(cfg.weights, manifest, cfg.sha256, cfg.md5)  # checksum values and where the file comes from; reads nothing
    if cfg.ids_file is not None and not Path(cfg.ids_file).is_file():
        raise ZooError(f"{cfg.ids_file}: ids file not found")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise ZooError(f"{cfg.data}: data folder not found")
    check_calibration(cfg, manifest, runtime_cls)
    if cfg.opset is not None and cfg.onnx:
        raise ZooError(f"--opset has no effect with --onnx (the given file is run as it is, at its own opset); "
                       f"leave one out")
    if cfg.opset is not None:
        from zoo.onnx_export import opset_problem
        problem = opset_problem(cfg.opset)
        if problem:
            raise ZooError(f"--opset {cfg.opset}: {problem}")
    if results_folder:
        check_writable_dir(Path(cfg.out) / manifest.name, "results folder")
    return manifest, runtime_cls, adapter

"""`python -m zoo`: the entrypoint, the same in a local per-model environment and in an image.

  python -m zoo run   --model unetpp [--weights W] [--data D] [--runtime onnxruntime|openvino|torch|...] ...
  python -m zoo bench --model unetpp [--batch-sizes ...]     (PyTorch eager vs compiled runtime)
  python -m zoo ab    --model unetpp --base onnxruntime --candidate openvino:int8   (interleaved A/B)
  python -m zoo score RESULT_JSON [--data D]   (the accuracy again from a run's --save-predictions)
  python -m zoo diagnose --model unetpp --precision int8 [--samples N] [--auto]   (where int8 loses accuracy)
  python -m zoo models

Exit codes: 0 ok; 1 (ab --fail-slower) B significantly slower beyond the threshold, (run, bench) the record is written but INVALID -- verify against PyTorch or
a reduced precision against its fp32 baseline failed: status "invalid", and an `INVALID: <reason>`
line on stderr --, (score) a figure differs from the record or breaks a record rule; 2 a clear
error (one line on stderr; `--debug` adds the traceback of an unexpected one), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM, or the parent process died).
No result file is written unless the whole run succeeded and the record validated."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from zoo.errors import ZooError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the zoo's: one line on stderr naming the command and the option,
    exit 2 (no usage block: `--help` shows it). No abbreviations (allow_abbrev off, subcommands
    too): `--runt X` must not mean --runtime, nor `--ou DIR` --out (a matrix job's args, a typo).
    Every option's default is in its help unless the help says it (Formatter). `shown`: the
    command the user typed, when it is not `python -m zoo` (ZOO_PROG, set by invoke: `invoke
    run`), named by the error lines instead of the parser's prog."""

    shown: str | None = None

    class Formatter(argparse.HelpFormatter):
        def _get_help_string(self, action):
            text, default = action.help or "", action.default
            if ("default" in text.lower() or not action.option_strings or default is None or default is False
                    or default is argparse.SUPPRESS or (isinstance(default, (dict, list)) and not default)):
                return text
            return f"{text} (default: %(default)s)"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Parser.Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        _say(f"error: {_Parser.shown or self.prog}: {message}")
        raise SystemExit(2)


def parser(typed_only: bool = False) -> argparse.ArgumentParser:
    """The run options of `run`, `bench` and `prep` come from their one declaration
    (zoo.stages.config.OPTIONS); bench's --runtimes, prep's --bin-dir and score's are their own.
    Every command (and the bare `python -m zoo`) takes -q/--quiet, -v/--verbose and --debug, which
    main() turns into ZOO_LOG_LEVEL and ZOO_DEBUG (the contract with invoke's tasks).
    `typed_only`: the declared options without defaults (typed_fields)."""
    import functools

    from zoo.stages import config
    output = argparse.ArgumentParser(add_help=False)  # absent unless given: the command's and the bare one's
    output.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="warnings and errors only (ZOO_LOG_LEVEL=WARNING)")
    output.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="DEBUG messages too (ZOO_LOG_LEVEL=DEBUG)")
    output.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="DEBUG messages and the traceback of an unexpected error (ZOO_DEBUG=1)")
    ap = _Parser(prog="python -m zoo", description=__doc__.split("\n\n")[0], parents=[output])
    sub = ap.add_subparsers(dest="cmd", required=True)
    add = functools.partial(sub.add_parser, parents=[output])
    r = add("run", help="run one model's guide end to end on one runtime")
    b = add("bench", help="PyTorch eager vs the compiled runtime, side by side")
    ab = add("ab", help="two configurations timed in alternating windows in one process: B's speed over "
             "A's with its 95%% interval and a verdict (faster, slower, no significant change)")
    for cmd, p in (("run", r), ("bench", b), ("ab", ab)):
        config.add_arguments(p, cmd, typed_only)
    b.add_argument("--runtimes", "--backends", dest="runtimes", default="torch,onnxruntime",
                   help="comma-separated runtimes, side by side (--backends: the old name)")
    b.add_argument("--precisions", help="comma-separated precisions, side by side on every runtime that runs "
                                        "them (default: --precision)")
    ab.add_argument("--base", required=True, metavar="RUNTIME[:PRECISION]", help="configuration A, e.g. onnxruntime")
    ab.add_argument("--candidate", required=True, metavar="RUNTIME[:PRECISION]",
                    help="configuration B, judged against A, e.g. openvino:int8")
    ab.add_argument("--min-effect", type=float, default=0.02, help="a ratio within this fraction of 1 is no "
                    "significant change, whatever the test says (default: 0.02)")
    ab.add_argument("--fail-slower", type=float, help="exit 1 when B is significantly slower than A by more than "
                    "this fraction (the gate; e.g. 0.05)")
    ab.add_argument("--expect", choices=("faster", "slower", "same"), help="exit 1 unless B is this against A "
                    "(same: no significant change)")
    pr = add("prep", help="write the preprocessed inputs as <id>.bin (float32 CHW), as the guides' "
                        "preprocessing scripts do, for tools that read .bin files (ais_bench, benchmark)")
    config.add_arguments(pr, "prep", typed_only)
    pr.add_argument("--bin-dir", type=Path, required=True, help="output folder (must not exist yet)")
    sc = add("score", help="recompute a run's accuracy from its saved predictions (--save-predictions), "
                        "without inference; exit 1 when it differs from the record")
    sc.add_argument("result", type=Path, metavar="RESULT_JSON", help="the run's result JSON")
    sc.add_argument("--data", type=Path, help="dataset root the labels are read from (default: the path the run recorded)")
    dg = add("diagnose", help="where a reduced-precision model loses accuracy: per-layer comparison with fp32, "
                        "first jump, per-layer sensitivity; --auto keeps the most sensitive layers in fp32")
    config.add_arguments(dg, "diagnose", typed_only)
    dg.add_argument("--samples", type=int, default=8, help="evaluation samples compared (the split's first N; default 8)")
    dg.add_argument("--auto", action="store_true", help="keep the most sensitive layers in fp32 until within the "
                    "manifest's tolerance (1%%) of fp32, and print the --keep-fp32 list")
    dg.add_argument("--auto-by", choices=("metric", "fidelity"), help="--auto's criterion: the model's metrics, or the "
                    "fraction of decisions flipped vs fp32 (default: metric, fidelity with a random checkpoint)")
    dg.add_argument("--top", type=int, default=10, help="sensitivity units printed (default 10)")
    dg.add_argument("--out", type=Path, help="the JSON report's path (default: results/<model>/diagnose-<runtime>-"
                    "<precision>-<time>-<6 hex>.json; never over an existing file)")
    if not typed_only:
        dg.set_defaults(precision="int8")
    add("models", help="list the models")
    return ap


def typed_fields(argv: list[str]) -> set[str]:
    """The declared options the command line gives, a default value typed explicitly included
    (argparse's defaults hide it): argv parsed again by a parser without their defaults."""
    return set(vars(parser(typed_only=True).parse_args(argv)))


def refuse_unused(args, argv: list[str]) -> None:
    """A calibration option typed for a run that would not read it (--calib-size 32 on an fp32
    run): one line naming it, before any work. bench: unless one of its runtime x precision runs
    reads it."""
    from zoo.runtimes import get_runtime
    from zoo.stages.config import CALIBRATION, unused_calibration_option
    typed = [f for f in CALIBRATION if f in typed_fields(argv)]
    if not typed:
        return
    if args.cmd == "bench":
        runtimes = [get_runtime(n.strip()) for n in args.runtimes.split(",") if n.strip()]
        precisions = [p.strip() for p in (args.precisions or args.precision).split(",") if p.strip()]
    else:
        runtimes, precisions = [get_runtime(args.runtime)], [args.precision]
    for field in typed:
        problems = [unused_calibration_option([field], rt, precisions) for rt in runtimes]
        if problems and all(problems):
            raise ZooError(problems[0])


def bench_configs(args) -> list:
    """One run per runtime x precision, in that order; a precision a runtime does not run is left
    out with a line saying so (a precision no runtime runs is an error). A run that does not read
    a calibration option has it at its default (an fp32 run beside an int8 one)."""
    import dataclasses

    from zoo.runtimes import get_runtime
    from zoo.stages.config import CALIBRATION, from_namespace, option, unused_calibration_option
    runtimes = [b.strip() for b in args.runtimes.split(",") if b.strip()]
    precisions = [p.strip() for p in (args.precisions or args.precision).split(",") if p.strip()]
    if not runtimes:
        raise ZooError(f"--runtimes names no runtime, got {args.runtimes!r}")
    configs = []
    for precision in precisions:
        ran = False
        for name in runtimes:
            problem = get_runtime(name).precision_problem(precision)
            if problem:
                print(f"bench: left out: {problem}", file=sys.stderr)
                continue
            unused = [f for f in CALIBRATION if unused_calibration_option([f], get_runtime(name), [precision])]
            cfg = from_namespace(args, runtime=name, precision=precision)
            configs.append(dataclasses.replace(cfg, **{f: option(f).default for f in unused}))
            ran = True
        if not ran:
            raise ZooError(f"--precisions {precision}: none of the runtimes {', '.join(runtimes)} runs it")
    return configs


def bench_header(k: int, total: int, cfg) -> str:
    """The line before a bench configuration's steps: '== run 2/4: unetpp openvino int8 (batch sizes 1,4)'."""
    sizes = ",".join(map(str, cfg.batch_sizes)) if cfg.batch_sizes else "from the manifest"
    return f"== run {k}/{total}: {cfg.model} {cfg.runtime} {cfg.precision} (batch sizes {sizes})"


def _bench_label(rec: dict, several_precisions: bool) -> str:
    """'openvino', or 'openvino int8' when several precisions ran."""
    return f"{rec['runtime']['name']} {rec['precision']}" if several_precisions else rec["runtime"]["name"]


def _with_interval(block: dict | None) -> str:
    """An infer-only block's samples/s with its uncertainty (zoo.stats.block_figure), 'failed'
    when it did not run."""
    from zoo.stats import block_figure
    return block_figure(block) if block else "failed"


def _folded(text: str, width: int = 100) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def bench_table(records: list[dict]) -> str:
    """Every line within 100 columns. One row per batch size and runtime (and precision, when
    several ran): infer-only samples/s with its 95% half-width (zoo.stats.figure: UNSTABLE when not
    within the tolerance), its median ms per batch, its ratio to the first run (two separately
    timed figures: "across runs", with their half-widths in quadrature), the pipeline's samples/s
    and its share of infer; then each reduced precision's speed-up over fp32 as the run measured
    it, interleaved in one process (reduced_precision.fp32_baseline: the one definition of
    speed-up); then a table of each run's best batch size against its own precision's peak."""
    import math

    from tabulate import SEPARATING_LINE, tabulate

    from zoo.stats import figure
    several = len({r["precision"] for r in records}) > 1
    by = {_bench_label(r, several): {(p["batch_size"], p["scope"]): p for p in r["perf"]} for r in records}
    names = list(by)
    base = names[0]

    def ok(n, bs, scope):
        p = by[n].get((bs, scope))
        return p if p and p["status"] == "ok" else None

    rows: list = []
    for bs in sorted({bs for d in by.values() for bs, _ in d}):
        if rows:
            rows.append(SEPARATING_LINE)
        for n in names:
            infer, pipe, first = ok(n, bs, "infer_only"), ok(n, bs, "pipeline"), ok(base, bs, "infer_only")
            ratio = "-"
            if n == base:
                ratio = "base"
            elif infer and first:
                halves = [(b.get("interval") or {}).get("half_width") for b in (infer, first)]
                both = all(h is not None for h in halves)  # else the bare ratio: no ± to state
                ratio = figure(infer["throughput"] / first["throughput"], math.hypot(*halves) if both else None,
                               True if both else None, digits=2)
            median = ((infer or {}).get("latency_ms") or {}).get("median")
            pipeline = "failed" if not pipe else f"{pipe['throughput']:.1f}" + (
                f" ({pipe['throughput'] / infer['throughput']:.0%})" if infer else "")
            rows.append([bs, n, _with_interval(infer), "-" if median is None else f"{median:.1f}", ratio, pipeline])
    table = tabulate(rows, headers=["bs", "run", "infer\nsamples/s", "infer p50\nms/batch", "x first",
                                    "pipeline\nsamples/s"],
                     colalign=("right", "left", "left", "right", "left", "left"), disable_numparse=True)
    out = [line.rstrip() for line in table.splitlines()]
    out += _folded(f"(±: the 95% interval's half-width; x first: over {base}, across runs: separately timed, "
                   "± both half-widths in quadrature; pipeline: samples/s (its share of infer))")
    for rec in records:  # the one speed-up: interleaved with fp32 in the same process
        base32 = ((rec.get("reduced_precision") or {}).get("fp32_baseline") or {})
        if base32.get("speedup") is None:
            continue
        iv = base32.get("speedup_interval") or {}
        out += _folded(f"speed-up {_bench_label(rec, True)} over fp32 at bs{base32['batch_size']} (interleaved in the "
                       f"run): x{base32['speedup']:.2f}"
                       + (f" [{iv['low']:.2f}, {iv['high']:.2f}]" if iv.get("low") else "")
                       + ("" if iv.get("stable", True) else " UNSTABLE"))
    best_rows, peaks = [], {}
    for rec in records:  # the best batch size against its own precision's peak
        best_ok = [p for p in rec["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"]
        if not best_ok:
            continue
        best = max(best_ok, key=lambda p: p["throughput"])
        own = rec["device"].get("precision_peak") or rec["device"].get("fp32_peak") or {}  # the run's precision's
        share = "-"
        if best.get("peak_fraction") and own.get("gflops"):
            share = f"{best['peak_fraction']:.0%} of {own['gflops']:.0f}"
            peaks[(own.get("precision", "fp32"), f"{own['gflops']:.0f}", own.get("kernel"))] = None
        best_rows.append([_bench_label(rec, several), best["batch_size"], f"{best['throughput']:.2f}",
                          f"{best['gflops']:.0f}" if best.get("gflops") else "-", share])
    if best_rows:
        table = tabulate(best_rows, headers=["best", "bs", "samples/s", "GFLOP/s", "of the peak\n(GFLOP/s)"],
                         colalign=("left", "right", "right", "right", "left"), disable_numparse=True)
        out += [""] + [line.rstrip() for line in table.splitlines()]
        out += _folded("(of the peak at the run's own precision, on this machine: "
                       + "; ".join(f"{kind} {gflops}" + (f" ({kernel})" if kernel else "")
                                   for kind, gflops, kernel in peaks) + ")") if peaks else []
    return "\n".join(out)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or the parent's death) during a run: handled exactly like Ctrl-C (every cleanup
    path that handles KeyboardInterrupt runs, nothing is written), but exits 143."""


_terminated: list[int] = []  # SIGTERM's mark: a library's wait (Ray's) may turn Terminated into KeyboardInterrupt


def _on_sigterm(signum, frame):
    _terminated.append(signum)
    raise Terminated()


def _install_signals() -> dict | None:
    """The zoo's SIGTERM handler, and SIGINT's KeyboardInterrupt set explicitly: a process started
    from a background job of a non-interactive shell inherits SIGINT ignored, and a Ctrl-C that
    invoke forwards (or a user's kill -INT) must still stop the run. The previous handlers, to
    restore (None off the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _terminated.clear()
    return {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}


def _restore_signals(previous: dict | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _watch_parent() -> None:
    """Stop when the process that started us dies (invoke killed, say): the kernel sends SIGTERM on
    the parent's death (Linux prctl PR_SET_PDEATHSIG), checked once against a parent that died
    before the call. Armed when ZOO_PARENT_PID names our parent; our own children get our pid."""
    want = os.environ.get("ZOO_PARENT_PID")
    if want and want.isdigit() and int(want) != os.getpid():
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # not Linux: the check below still catches a parent that is already gone
        if os.getppid() != int(want):
            raise Terminated()
    os.environ["ZOO_PARENT_PID"] = str(os.getpid())


def _say(msg: str) -> None:
    """One line on stderr that cannot fail on names with undecodable bytes (surrogate escapes)."""
    line = " ".join(str(msg).split())
    data = (line + "\n").encode("utf-8", "backslashreplace")
    try:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()
    except (AttributeError, ValueError):  # a replaced stderr without a buffer (tests)
        print(data.decode("utf-8"), end="", file=sys.stderr)
    except OSError:
        pass  # stderr is gone (a closed pipe): nothing left to tell


def _dispatch(args, argv: list[str]) -> int:
    if args.cmd == "models":
        from zoo.manifest import available_models, describe_manifest, load_manifest
        for name in available_models():
            print("\n".join(describe_manifest(load_manifest(name))))
        return 0
    if args.cmd == "prep":
        from zoo.run import write_bins
        from zoo.stages.config import check_values
        check_values(args, "prep")  # --limit 0 would write an empty folder
        print(write_bins(args.model, args.data, args.ids_file, args.limit, args.options, args.bin_dir))
        return 0
    if args.cmd == "score":
        from zoo.stages.score import rescore_main
        return rescore_main(args.result, args.data)
    if args.cmd == "diagnose":
        from zoo.diagnose import main as diagnose_main
        from zoo.stages.config import from_namespace
        cfg = from_namespace(args, out=Path("results"))
        return diagnose_main(cfg, args.samples, args.auto, args.top, args.out, args.auto_by)
    from zoo.run import run
    from zoo.stages.config import check_config, from_json, from_namespace
    if args.cmd == "_child":
        print(run(from_json(args.config), argv))
        return 0
    if args.cmd == "ab":
        from zoo.ab import main as ab_main
        return ab_main(args, typed_fields(argv))
    if args.cmd in ("run", "bench"):
        refuse_unused(args, argv)
    if args.cmd == "run":
        path = run(from_namespace(args), argv)
        _summary(path)
        print(path)
        return _verdict([path])
    import json
    configs = bench_configs(args)
    for cfg in configs:  # every runtime's settings checked before the first one runs
        check_config(cfg)
    from zoo.stages import log
    paths = []
    for k, cfg in enumerate(configs, 1):  # one header per configuration, before its [1/7]..[7/7]
        log(bench_header(k, len(configs), cfg))
        paths.append(run(cfg, argv))
    print(bench_table([json.loads(p.read_text()) for p in paths]))
    for p in paths:
        print(p)
    return _verdict(paths)


def _summary(path: Path) -> None:
    """The record's summary on stderr (zoo.summary), unless the caller prints its own
    (ZOO_SUMMARY=0: invoke run reads the record and summarises it on the host)."""
    if os.environ.get("ZOO_SUMMARY") == "0":
        return
    import json
    from zoo.summary import lines
    print("\n".join(lines(json.loads(Path(path).read_text()), path)), file=sys.stderr, flush=True)


def _verdict(paths: list[Path]) -> int:
    """1 with a loud `INVALID: <reason>` line per invalid record (status "invalid": written, but
    its numerics failed a check), else 0. A `_child` (--isolate) returns 0: its parent judges."""
    import json
    from zoo.checks import status_of
    code = 0
    for path in paths:
        rec = json.loads(Path(path).read_text())
        if status_of(rec) == "invalid":
            _say(f"INVALID: {rec.get('error') or 'a check failed'} ({path})")
            code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    """`python -m zoo`. -q/-v/--debug set ZOO_LOG_LEVEL (WARNING/DEBUG) and ZOO_DEBUG=1 for this
    process and its children (left out of the record's command line); ZOO_PROG (invoke's task,
    `invoke run`) is the command every error line names, and is not passed on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = {key: os.environ.get(key) for key in ("ZOO_PROG", "ZOO_LOG_LEVEL", "ZOO_DEBUG", "ZOO_PARENT_PID")}
    shown = os.environ.pop("ZOO_PROG", None) or None  # every variable restored below: main() may run in-process
    _Parser.shown = shown

    def error(message: str) -> None:
        _say(f"error: {shown}: {message}" if shown else f"error: {message}")

    previous = None
    try:
        if argv[:2] == ["_child", "--config"] and len(argv) == 3:  # one batch size of an --isolate sweep
            args = argparse.Namespace(cmd="_child", config=argv[2])
        else:
            args = parser().parse_args(argv)
        quiet, verbose, debug = (getattr(args, flag, False) for flag in ("quiet", "verbose", "debug"))
        if quiet and (verbose or debug):
            _Parser(prog=f"python -m zoo {args.cmd}").error("-q/--quiet excludes -v/--verbose and --debug")
        if quiet or verbose or debug:
            os.environ["ZOO_LOG_LEVEL"] = "WARNING" if quiet else "DEBUG"
        if debug:
            os.environ["ZOO_DEBUG"] = "1"
        argv = [a for a in argv if a not in ("-q", "--quiet", "-v", "--verbose", "--debug")]  # not in the record
        previous = _install_signals()
        _watch_parent()
        return _dispatch(args, argv)
    except ZooError as exc:
        error(str(exc))
        return 2
    except Terminated:
        error("terminated (SIGTERM); no result written")
        return 143
    except KeyboardInterrupt:
        if _terminated:  # SIGTERM, seen by Ray's wait as a KeyboardInterrupt
            error("terminated (SIGTERM); no result written")
            return 143
        error("interrupted; no result written")
        return 130
    except MemoryError as exc:
        error(f"out of memory ({one_line(exc)})")
        return 2
    except BrokenPipeError:  # the reader of our output went away (`| head`, a dead parent): as SIGPIPE would
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 141
    except Exception as exc:  # the last line of defence: one line, the traceback only with --debug
        if os.environ.get("ZOO_DEBUG") == "1":
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.filename is not None:
            error(f"{exc.filename}: {exc.strerror or one_line(exc)}")
        else:
            error(f"{type(exc).__name__}: {one_line(exc)[:500]}"
                  + ("" if os.environ.get("ZOO_DEBUG") == "1" else " (--debug shows the traceback)"))
        return 2
    finally:
        _restore_signals(previous)
        _Parser.shown = None
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

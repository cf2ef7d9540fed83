"""The zoo's commands (invoke). `python -m invoke --list` shows them.

  invoke setup  --model unetpp          create/reuse the model's environment (.venvs/unetpp)
  invoke run    --model unetpp [...]    run the guide end to end (local env; --docker for the image)
  invoke bench  --model unetpp          PyTorch eager vs the compiled runtime, side by side
  invoke score  RESULT [--data D]      the accuracy again from a run's saved predictions (no inference)
  invoke prep   --model unetpp --bin-dir D   write preprocessed <id>.bin inputs (guide/ais_bench style)
  invoke diagnose --model unetpp --precision int8 [--auto]   where int8 loses accuracy (per layer)
  invoke build  --model unetpp          build the model's Docker image alone
  invoke base-image                     a local python base image from Debian packages (build --base-image local)
  invoke lock   [--model unetpp]        regenerate the hash lock(s) from requirements.txt (pip-compile)
  invoke report [--results results]     Markdown + HTML report of every result JSON
  invoke compare BASELINE NEW           accuracy deltas and throughput ratios; exit 1 on a regression
  invoke test   [--model unetpp]        the test suite (host tests + each model's, in its env)
  invoke lint                           hadolint every Dockerfile

`run`, `bench` and `prep` take the run options declared in zoo/stages/config.py (one declaration
for these tasks, `python -m zoo` and the isolate config) and pass them on to `python -m zoo`.
Every task takes --debug, -q/--quiet and -v/--verbose; its options are typed and checked by invoke
itself, with their defaults in `invoke --help <task>` (runner/cli.py).
"""
from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

from invoke import Exit

from runner import ROOT, cli, docker, envs
from runner.cli import Value, task
from runner.validate import ResultError, load_result
from zoo.stages import config as run_config

RESULTS = ROOT / "results"


def _fail(msg: str, code: int = 2):
    raise Exit(f"error: {msg}", code=code)


def _need(model: str | None) -> str:
    if model is None:
        _fail(f"--model is required (known: {', '.join(envs.models())})")
    return _models(model)[0]


def _models(model: str | None) -> list[str]:
    try:
        return [envs.check_model(model).name] if model is not None else envs.models()
    except envs.EnvError as exc:
        _fail(str(exc))


def _ensure(model: str) -> Path:
    try:
        level = cli.current().log_level or os.environ.get("ZOO_LOG_LEVEL")
        return envs.ensure(model, say_current=level == "DEBUG")  # said at DEBUG level only
    except envs.EnvError as exc:
        _fail(str(exc))


def _one_name(new, old, flag: str, old_flag: str):
    """--runtime(s) and its old name --backend(s): either, or both if they agree."""
    if new is not None and old is not None and new != old:
        _fail(f"{flag} {new!r} and {old_flag} {old!r} disagree ({old_flag} is the old name of {flag})")
    return new if new is not None else old


def _zoo_args(given: dict, command: str = "run", docker_: bool = False) -> list[str]:
    """The `python -m zoo <command>` words of the declared run options given to a task (`given`:
    invoke's parameters, named after the flags). An old name (--backend) and the new one may both
    be given if they agree; a path is made absolute (the model process runs in the repo root).
    Every value given is passed on, one equal to the run option's default too (`diagnose
    --precision fp32` must reach diagnose, whose own default is int8)."""
    def given_value(name: str):
        value = given.get(name)
        return None if value is False or value == [] else value  # a switch or a repeatable flag not given

    values = {}
    for o in run_config.options(command):
        if o.task == "own":
            continue
        value = given_value(o.names[0])
        for name, old_flag in zip(o.names[1:], o.flags[1:]):
            value = _one_name(value, given_value(name), o.flag, old_flag)
        if value is None:
            continue
        if o.task == "path" and docker_:
            _fail(f"{o.flag} is not supported with --docker (the container sees only --data, --weights and --out)")
        if o.kind == "switch":
            value = not o.default
        elif value is True:  # a value-optional flag given alone (--profile)
            value = o.const
        elif o.task == "path":
            value = Path(value).resolve()
        values[o.field] = value
    return run_config.to_argv(values, command, given=True)


def _zoo_task(command: str, **kw):
    """@task for a task that runs `python -m zoo <command>`: the function's own parameters, then
    one keyword parameter per flag of every declared run option (invoke reads a task's
    parameters from its signature), with the declaration's help, kind and default (shown in the
    help and checked by invoke: runner.cli.Value); the function receives them in **options. An
    own parameter named like a declared option (model, weights, data, out) gets the option's help
    and kind unless `help` or `values` gives one."""
    def wrap(fn):
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        helps, values, iterable, optional = {}, {}, [], []
        for o in run_config.options(command):
            if o.task == "own":
                if o.field in sig.parameters:
                    helps[o.field], values[o.field] = o.help, Value.of(o)
                continue
            for name, flag in zip(o.names, o.flags):
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                                default=False if o.kind == "switch" else None))
                helps[name] = o.help if flag == o.flag else f"the old name of {o.flag}"
                if o.kind != "switch":
                    values[name] = Value.of(o, shows_default=flag == o.flag)
                if o.kind == "pairs":
                    iterable.append(name)
                if o.const is not None:
                    optional.append(name)
        fn.__signature__ = sig.replace(parameters=params)
        return task(fn, auto_shortflags=False, iterable=iterable, optional=optional,
                    help={**helps, **kw.pop("help", {})}, values={**values, **kw.pop("values", {})}, **kw)
    return wrap


def _paths(weights, data) -> list[str]:
    """--weights / --data for the model process, which runs in the repo root: local paths are
    made absolute (a URL or a manifest checkpoint name stays as it is)."""
    out = []
    if weights:
        out += ["--weights", str(Path(weights).resolve()) if Path(weights).exists() else str(weights)]
    if data:
        out += ["--data", str(Path(data).resolve())]
    return out


def _in_env(model: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run `python <argv>` in the model's environment and wait for it. SIGINT and SIGTERM sent to
    this process are forwarded to the model process, which stops cleanly (one line, nothing
    written, 130/143) and is waited for; its error lines name the task (ZOO_PROG: `error: invoke
    run: ...`), and it gets the task's --debug/-q/-v as ZOO_DEBUG and ZOO_LOG_LEVEL (runner.cli).
    The model process also stops if this one dies (ZOO_PARENT_PID: the kernel's parent-death signal). It runs in its own process group, so a
    terminal's Ctrl-C reaches it once, through the forwarding. A model process killed by a signal
    (SIGKILL: the OOM killer) is one line and exit 128+n (subprocess's -n would be exit 256-n)."""
    py = _ensure(model)
    proc = subprocess.Popen([str(py), *argv], cwd=ROOT,
                            env=envs.model_env({"ZOO_PARENT_PID": str(os.getpid()), "ZOO_SUMMARY": "0",
                                                "ZOO_PROG": cli.prog()}),  # its error lines name `invoke run`
                            stdout=subprocess.PIPE, text=True, start_new_session=True)

    def forward(signum, frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        out, _ = proc.communicate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # never leave the model process behind
            proc.kill()
            proc.wait()
    if proc.returncode < 0:
        _fail(_killed_line(-proc.returncode), 128 - proc.returncode)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def _killed_line(signum: int) -> str:
    """What a model process's death by signal `signum` means, in one line."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    why = " (out of memory?)" if signum == signal.SIGKILL else ""
    return f"the model process was killed by {name}{why}"


def _summarise(path: Path) -> str:
    """The record's summary (zoo.summary: what ran, accuracy, per batch size the throughput with
    its interval and latency percentiles, UNSTABLE lines, the verdict), its INVALID line first
    (status invalid: verify or the reduced precision failed, the figures below are not a sound
    run's); returns zoo.checks.status_of."""
    from zoo.checks import invalid_reason, status_of
    from zoo.summary import lines
    rec = load_result(path)
    status = status_of(rec)
    if status != "ok":
        print(f"{status.upper()}: {rec['error'] or invalid_reason(rec) or 'no reason given'}")
    print("\n".join(lines(rec, path)))
    sh = rec.get("sharding")
    if sh:
        scaling = sh["scaling"]
        print(f"  sharding: {sh['count']} shards on {len(sh['cluster']['nodes'])} node(s) (Ray {sh['cluster']['ray_version']}, "
              f"{sh['cluster']['mode']}), {sh['resource']}, {len(sh['retries'])} retried call(s)"
              + (f"; scaling efficiency vs one shard {scaling['efficiency']:.2f}" if scaling else ""))
    return status


@task(auto_shortflags=False, help={"model": "model name (default: every model)", "force": "recreate even if up to date"})
def setup(c, model=None, force=False):
    """Create or reuse each model's pinned environment.

    One per model: .venvs/<model>, from the model's hash lock."""
    for m in _models(model):
        try:
            envs.ensure(m, force=force)
        except envs.EnvError as exc:
            _fail(str(exc))


def _check_docker_cluster(options: dict) -> None:
    """--cluster other than local under --docker: the container runs with --network none, so a
    cluster address (or auto's RAY_ADDRESS, which it does not see) can never be joined from it."""
    cluster = options.get("cluster")
    if cluster not in (None, "local"):
        _fail(f"--cluster {cluster} cannot be used with --docker (the container runs without network: "
              f"--shards under --docker use a local cluster inside it)")


@_zoo_task("run", help={
    "docker": "run in the model's image instead of the local env", "dry-run": "print the docker commands only",
    "device-type": "auto|cpu|ascend|nvidia (docker)",
    "container-memory": "with --docker: the container's memory limit (docker --memory, e.g. 8g; a number is MB; "
                        "default: none)"},
    values={"device_type": Value(choices=("auto", "cpu", "ascend", "nvidia"))})
def run(c, model=None, weights=None, data=None, out=str(RESULTS), docker_=False, dry_run=False, device_type="auto",
        container_memory=None, **options):
    """Run a model's guide end to end; validate the result JSON."""
    model = _need(model)
    if docker_ or dry_run:
        _check_docker_cluster(options)
    zargs = _zoo_args(options, "run", docker_=docker_ or dry_run)
    out = Path(out).resolve()
    if docker_ or dry_run:
        kw = dict(out=out, data=data, weights=weights, device_type=device_type,
                  zoo_args=zargs + cli.current().zoo_flags(),  # the container does not see ZOO_LOG_LEVEL
                  memory=container_memory)
        try:
            if dry_run:
                for argv in docker.plan_build(model):  # the shared images, the model's, the core
                    print(docker.format_command(argv))
                for step in docker.plan_prepare(model, **kw):  # the results folder, for the image's user
                    print(docker.format_command(step))
                print(docker.format_command(docker.plan_run(model, **kw)))
                return
            rc = docker.run(model, **kw)  # forwards Ctrl-C/SIGTERM to the container: the zoo's line, 130/143
        except docker.Interrupted as exc:
            _fail(str(exc), exc.code)
        except docker.DockerError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:  # before the container started, or while it was removed
            _fail("interrupted; no result written", 130)
        new = sorted((out / model).glob("*.json"), key=lambda p: p.stat().st_mtime)
        if rc not in (0, 1) or (rc == 1 and not new):  # 1: the record is written but invalid
            raise Exit(code=rc)
        if new:
            _summarised(new[-1])
        return
    argv = ["-m", "zoo", "run", "--model", model, "--out", str(out), *zargs, *_paths(weights, data)]
    proc = _in_env(model, argv)
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not proc.stdout.strip()):
        raise Exit(code=proc.returncode)  # zoo printed its one-line error on stderr
    lines = proc.stdout.strip().splitlines()
    if not lines:
        _fail("run finished but printed no result path")
    _summarised(Path(lines[-1]))


def _summarised(path: Path) -> None:
    """invoke run's ending: the summary; exit 1 when the record is not ok (INVALID, as zoo run),
    2 when it cannot be read as a valid record."""
    try:
        status = _summarise(path)
    except ResultError as exc:
        _fail(f"run finished but its result is not valid: {exc}")
    if status != "ok":
        raise Exit(code=1)


@_zoo_task("bench", help={"runtimes": "comma-separated runtimes (default torch,onnxruntime)",
                          "backends": "the old name of --runtimes", "out": "results folder (default: results/bench)",
                          "precisions": "comma-separated precisions side by side, e.g. fp32,bf16 (default: --precision)"})
def bench(c, model=None, weights=None, data=None, out=str(RESULTS / "bench"), runtimes=None, backends=None,
          precisions=None, **options):
    """Compare runtimes and precisions of one model side by side.

    PyTorch eager vs the compiled runtimes (e.g. --runtimes torch,onnxruntime,openvino), and
    precisions (e.g. --precisions fp32,bf16): throughput per batch size and the ratios."""
    model = _need(model)
    names = _one_name(runtimes, backends, "--runtimes", "--backends") or "torch,onnxruntime"
    argv = ["-m", "zoo", "bench", "--model", model, "--runtimes", names, "--out", str(Path(out).resolve()),
            *(["--precisions", precisions] if precisions else []), *_zoo_args(options, "bench")]
    argv += _paths(weights, data)
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@_zoo_task("ab", help={"base": "configuration A: RUNTIME[:PRECISION], e.g. onnxruntime",
                       "candidate": "configuration B, judged against A: RUNTIME[:PRECISION], e.g. openvino:int8",
                       "out": "results folder (default: results; the A/B JSON goes to <out>/ab)",
                       "min-effect": "a ratio within this fraction of 1 is no significant change (default 0.02)",
                       "fail-slower": "exit 1 when B is significantly slower by more than this fraction (default: no gate)",
                       "expect": "faster|slower|same: exit 1 unless B is that against A (default: no expectation)"},
           values={"min_effect": Value("float", 0.02), "fail_slower": "float", "base": Value(default=cli.REQUIRED),
                   "candidate": Value(default=cli.REQUIRED),
                   "expect": Value(choices=("faster", "slower", "same"))})
def ab(c, model=None, base=None, candidate=None, weights=None, data=None, out=str(RESULTS), min_effect=None, fail_slower=None,
       expect=None, **options):
    """Time two configurations in alternating windows (A/B).

    A and B (e.g. --base onnxruntime --candidate openvino:int8) are timed in alternating windows
    in one process: B's throughput over A's with its 95% interval and a verdict; --fail-slower
    makes it a gate."""
    model = _need(model)
    if not base or not candidate:
        _fail("--base and --candidate are required (RUNTIME[:PRECISION] each)")
    argv = ["-m", "zoo", "ab", "--model", model, "--base", base, "--candidate", candidate, "--out", str(Path(out).resolve()),
            *(["--min-effect", str(min_effect)] if min_effect is not None else []),
            *(["--fail-slower", str(fail_slower)] if fail_slower is not None else []),
            *(["--expect", expect] if expect else []), *_zoo_args(options, "ab")]
    argv += _paths(weights, data)
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@_zoo_task("prep", help={"bin-dir": "output folder (must not exist yet)"},
           values={"bin_dir": Value("path", cli.REQUIRED)})
def prep(c, model=None, bin_dir=None, data=None, **options):
    """Write preprocessed inputs as <id>.bin files (for ais_bench).

    float32 CHW, one file per sample, for tools that read .bin inputs."""
    model = _need(model)
    if not bin_dir:
        _fail("--bin-dir is required")
    argv = ["-m", "zoo", "prep", "--model", model, "--bin-dir", str(Path(bin_dir).resolve()),
            *_zoo_args(options, "prep"), *_paths(None, data)]
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@task(auto_shortflags=False, help={"result": "a run's result JSON (a run with --save-predictions)",
                                   "data": "dataset root the labels are read from (default: the path the run recorded)"},
      values={"result": "path", "data": "path"})
def score(c, result, data=None):
    """Recompute a run's accuracy from its saved predictions.

    No inference; exit 1 if a figure differs from the record. Runs `python -m zoo score` in the
    environment of the model the result names."""
    path = Path(result).resolve()
    try:
        name = load_result(path)["model"]["name"]
    except ResultError as exc:
        _fail(str(exc))
    model = _models(name)[0]  # a recorded name is checked like a given one before it becomes a path
    proc = _in_env(model, ["-m", "zoo", "score", str(path), *(["--data", str(Path(data).resolve())] if data else [])])
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@_zoo_task("diagnose", help={
    "samples": "evaluation samples compared (the split's first N; default 8)",
    "auto": "keep the most sensitive layers in fp32 until within 1% of fp32; print the --keep-fp32 list",
    "auto-by": "--auto's criterion: metric or fidelity (default: metric; fidelity with a random checkpoint)",
    "top": "sensitivity units printed (default 10)",
    "out": "the JSON report's path (default: results/<model>/diagnose-<runtime>-<precision>-<time>-<6 hex>.json; never over an existing file)"},
    values={"samples": Value("int", 8), "top": Value("int", 10), "auto_by": Value(choices=("metric", "fidelity")),
            "out": "path"})
def diagnose(c, model=None, weights=None, data=None, out=None, samples=None, auto=False, auto_by=None, top=None,
             **options):
    """Find where a reduced precision loses accuracy, layer by layer.

    Every shared intermediate tensor compared with fp32 on real samples, the first layer where the
    error jumps, the per-layer sensitivity ranking; --auto keeps the most sensitive layers in fp32
    until within 1%."""
    model = _need(model)
    argv = ["-m", "zoo", "diagnose", "--model", model, *_zoo_args(options, "diagnose"), *_paths(weights, data)]
    argv += ["--samples", str(samples)] if samples is not None else []
    argv += ["--top", str(top)] if top is not None else []
    argv += ["--auto"] if auto else []
    argv += ["--auto-by", auto_by] if auto_by else []
    argv += ["--out", str(Path(out).resolve())] if out else []
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@task(auto_shortflags=False, help={"model": "model name (required)", "tag": "image tag (default zoo/<model>:latest)", "dry-run": "print the command only",
                                   "base-image": "python base image (default: the digest-pinned BASE_IMAGE of runner/dockerfiles/base.Dockerfile; "
                                                 "'local': zoo/python-local:3.11-bookworm, made first by runner/base_image.sh if missing)",
                                   "pip-config": "a pip.conf for the build stages' pip (PIP_CONFIG_FILE; it alone decides the indexes; "
                                                 "default: none)",
                                   "ca-bundle": "a CA bundle (PEM) for the build stages' pip (PIP_CERT: a TLS-re-signing network; "
                                                "default: none)",
                                   "wheels": "a folder of wheels for the build stages' pip (PIP_FIND_LINKS; default: none)",
                                   "compile-mmcv": "OpenMMLab images: compile mmcv in the build stage even if work/cache/wheels has it",
                                   "rebuild": "build the shared and environment images again even if their tags are here"},
      values={"pip_config": "path", "ca_bundle": "path", "wheels": "path"})
def build(c, model=None, tag=None, dry_run=False, base_image=None, pip_config=None, ca_bundle=None, wheels=None,
          compile_mmcv=False, rebuild=False):
    """Build one model's Docker image.

    The shared runner/dockerfiles/ images it builds FROM, models/<model>/Dockerfile,
    then runner/dockerfiles/core.Dockerfile on top (context = repo root). The pip config, CA bundle and wheels reach
    only build stages (runner/dockerfiles/build-inputs/README.md): no layer of the image holds them. A shared or
    environment image already here (same content tag, base and inputs) is reused; build stages are removed after."""
    model = _need(model)
    commit = docker.current_git_commit()
    try:
        inputs = docker.build_inputs(pip_config, ca_bundle, wheels)
        if dry_run:
            if base_image == "local":
                print(f"bash {docker.BASE_IMAGE_SCRIPT}")
            for step in docker.prepare_build(model, tag, commit, base_image, inputs, not compile_mmcv):
                for name, source in _input_lines(step.inputs):  # what `build` adds to that build's context
                    print(f"# context + {name} = {source}")
                for folder, host in step.context_dirs:  # a ZOO_MODEL_DIRS model's folder, sent as models/<name>
                    print(f"# context + {folder}/ = {host}/")
                print(docker.format_command(step.argv()))
            return
        if base_image == "local":
            _local_base_image()
        print(docker.build(model, tag, commit, base_image=base_image, inputs=inputs, host_mmcv=not compile_mmcv,
                           rebuild=rebuild))
    except docker.DockerError as exc:
        _fail(str(exc))


def _input_lines(inputs) -> list[tuple[str, str]]:
    """A build's inputs for --dry-run, the wheels folder as one line."""
    lines, folders = [], {}
    for name, source in inputs:
        if f"{docker.BUILD_INPUTS_DIR}/wheels/" in name:
            folders.setdefault(str(source.parent), []).append(name)
        else:
            lines.append((name, str(source)))
    for folder, names in folders.items():
        lines.append((f"{docker.BUILD_INPUTS_DIR}/wheels/", f"{folder}/ ({len(names)} files)"))
    return lines


def _local_base_image() -> None:
    """runner/base_image.sh: make zoo/python-local:3.11-bookworm unless it exists (its one-line error: exit 2)."""
    proc = subprocess.run(["bash", str(ROOT / docker.BASE_IMAGE_SCRIPT)], stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        _fail((proc.stderr.strip().splitlines() or [f"{docker.BASE_IMAGE_SCRIPT} failed"])[-1])


@task(auto_shortflags=False, help={"ca-bundle": "CA bundle for an https Debian mirror (not put in the image; default: none)",
                                   "mirror": "Debian mirror (default http://deb.debian.org/debian)"},
      values={"ca_bundle": "path"})
def base_image(c, ca_bundle=None, mirror=None):
    """Make the local Python base image from Debian packages.

    zoo/python-local:3.11-bookworm, with debootstrap (as root; nothing to do when it exists): for
    `invoke build --base-image local` where the official image cannot be pulled."""
    argv = ["bash", str(ROOT / docker.BASE_IMAGE_SCRIPT)]
    argv += ["--ca-bundle", ca_bundle] if ca_bundle else []
    argv += ["--mirror", mirror] if mirror else []
    proc = subprocess.run(argv)
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@task(auto_shortflags=False, help={"dry-run": "list them, remove nothing"})
def prune_images(c, dry_run=False):
    """Remove the zoo's images that no build of this tree makes.

    runner/image_store.py: older content tags of zoo/base, zoo/mmcv and zoo/<model>-env, older untagged
    final images, build stages left behind; a line each.
    Other images, tagged final images (zoo/<model>:<tag>) and images a container uses are kept."""
    from runner import engine_check as check
    try:
        check.prune_images(dry_run=dry_run, indent="")
    except docker.DockerError as exc:
        _fail(str(exc))


@task(auto_shortflags=False, help={"results": "folder of result JSONs (default: results)", "out": "output folder (default: the results folder)",
                                   "csv": "where to write the CSV of every run x batch size x scope (default: OUT/report.csv)"},
      values={"results": "path", "out": "path", "csv": "path"})
def report(c, results=str(RESULTS), out=None, csv=None):
    """Write the report of every result JSON: HTML, Markdown, CSV.

    Accuracy and performance tables, throughput / latency / accuracy-vs-throughput plots; report.csv:
    one row per run x batch size x scope (the page links to it)."""
    from runner.report import write_report
    try:
        paths = write_report(Path(results), Path(out) if out else None, Path(csv) if csv else None)
    except ResultError as exc:
        _fail(str(exc))
    print(paths["markdown"])
    print(paths["html"])
    print(paths["csv"])


@_zoo_task("run", help={
    "models": "comma-separated models (default: every model)",
    "runtimes": "comma-separated runtimes (default: those this machine's devices run: the CPU ones, GPU/NPU ones "
                "where such a device is present)",
    "precisions": "comma-separated precisions (default: each model's verify tolerances that the runtime runs)",
    "batch_sizes": "every job's batch sizes (default: each manifest's benchmark batch sizes)",
    "file": "a JSON matrix: a list of jobs {model, runtime, precision, batch_sizes, args, name} or an object of "
            "filters {models, runtimes, precisions, batch_sizes}; the flags filter it further (default: none, the "
            "manifests' matrix)",
    "cluster": "local (a Ray cluster on this machine; the default unless RAY_ADDRESS is set), auto (the running one), "
               "or an address ray://HOST:10001 / HOST:6379",
    "docker": "run each job in its model's image (invoke run --docker)",
    "out": "the matrix's folder (default: results/matrix-<UTC time>): jobs/, matrix.json, matrix.md, report.md/html",
    "cpus-per-job": "CPU slots (Ray num_cpus) and --threads of each job (default: half the cores, at least 1)",
    "setup-envs": "create/update each model's environment before the jobs (default: use them as they are)",
    "dry-run": "print the matrix and each job's command only",
    "runtime": "a single run's: use --runtimes", "backend": "a single run's: use --runtimes",
    "precision": "a single run's: use --precisions"},
    values={"file": "path", "out": "path", "cpus_per_job": "int",
            **{name: Value(shows_default=False) for name in ("runtime", "backend", "precision")}})
def matrix(c, models=None, runtimes=None, precisions=None, file=None, docker_=False, out=None, cpus_per_job=None,
           setup_envs=False, dry_run=False, data=None, **options):
    """Run models x runtimes x precisions as jobs on a Ray cluster.

    Models x runtimes x precisions x batch sizes, from the manifests (or --file), each job a Ray task
    in its model's environment (or image); the results validated, one report, matrix.json/.md.
    Other run options (--limit, --iters, --no-peak, --option, ...) go to every job; --cluster is the matrix's."""
    import time
    from runner import matrix as mx
    for name in ("runtime", "backend", "precision", "shards", "devices", "shard_resource", "shard_retries",
                 "no_scaling_reference"):
        if options.get(name) not in (None, False):
            _fail(f"--{name.replace('_', '-')} is a single run's option, not a matrix's (a matrix takes --runtimes, "
                  f"--precisions; its jobs are not sharded)")
    sizes, cluster = options.pop("batch_sizes", None), options.pop("cluster", None)
    # calibration options go only to the jobs that calibrate (an fp32 job refuses them)
    calibration = {}
    for o in run_config.options("run"):
        if o.field in run_config.CALIBRATION:
            words = _zoo_args({n: options.pop(n, None) for n in o.names}, "run", docker_=docker_)
            if words:
                calibration[o.field] = words
    try:
        cpus = int(cpus_per_job) if cpus_per_job is not None else mx.default_cpus_per_job()
        if cpus < 1:
            raise ValueError
    except ValueError:
        _fail(f"--cpus-per-job must be a positive integer, got {cpus_per_job!r}")
    common = _zoo_args(options, "run", docker_=docker_)
    common += [] if options.get("threads") else ["--threads", str(cpus)]
    common += _paths(None, data)
    out = Path(out).resolve() if out else RESULTS / f"matrix-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        mx.cluster_address(cluster)
        jobs = mx.plan(models, runtimes, precisions, sizes, file)
        print("\n".join(mx.describe(jobs)), flush=True)
        if dry_run:
            for job in jobs:
                print(f"  {job.id}: {mx.command_line(mx.job_spec(job, out, common, docker_, calibration))}")
            return
        mx.check_out(out)
        if docker_ and not _engine_reachable():
            _fail("--docker: no Docker daemon reachable (invoke engine-check installs and starts one)")
        for m in sorted({j.model for j in jobs}) if setup_envs else []:
            _ensure(m)
        summary = mx.run_matrix(jobs, out, common, cluster=cluster, cpus_per_job=cpus, docker=docker_,
                                calibration=calibration,
                                log=lambda line: print(line, flush=True))
    except mx.Interrupted as exc:
        _fail(str(exc), exc.code)
    except mx.MatrixError as exc:
        _fail(str(exc))
    print(out / "matrix.md")
    if summary["report"]:
        print(out / summary["report"]["markdown"])
    if summary["failed"]:
        raise Exit(f"error: {summary['failed']} of {len(jobs)} job(s) failed (see {out / 'matrix.md'})", code=1)


def _fraction(text, flag: str, default: float) -> float:
    """A fraction option of a task, given as text: invoke would convert a typed default's value
    itself and end in a traceback on `abc`, so the parameter defaults to None and is read here."""
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        _fail(f"{flag} must be a fraction in [0, 1), got {text!r}")
    if not 0 <= value < 1:  # NaN too
        _fail(f"{flag} must be a fraction in [0, 1), got {text!r}")
    return value


@task(auto_shortflags=False, help={
    "baseline": "baseline results (folder or file)", "new": "new results (folder or file)",
    "max-accuracy-drop": "relative accuracy drop that fails (default 0.01)",
    "max-throughput-drop": "relative throughput drop that fails, when significantly slower (default 0.10)",
    "min-effect": "smaller relative throughput changes are no significant change (default 0.02)",
    "allow-missing": "runs/batch sizes only in the baseline do not fail", "out": "write compare.md + compare.json here (default: printed only)",
    "accuracy-only": "compare accuracy only, matching runs on any device name (a baseline from another machine)"},
      values={"baseline": "path", "new": "path", "out": "path", "max_accuracy_drop": Value("fraction", 0.01),
              "max_throughput_drop": Value("fraction", 0.10), "min_effect": Value("fraction", 0.02)})
def compare(c, baseline, new, max_accuracy_drop=None, max_throughput_drop=None, allow_missing=False, out=None,
            accuracy_only=False, min_effect=None):
    """Compare two result sets; exit 1 on a regression (the CI gate).

    A regression: an accuracy drop, or a significantly lower throughput, beyond the thresholds."""
    from runner.compare import run_compare
    try:
        comp, md = run_compare(Path(baseline), Path(new), Path(out) if out else None,
                               max_accuracy_drop=_fraction(max_accuracy_drop, "--max-accuracy-drop", 0.01),
                               max_throughput_drop=_fraction(max_throughput_drop, "--max-throughput-drop", 0.10),
                               min_effect=_fraction(min_effect, "--min-effect", 0.02),
                               allow_missing=allow_missing,
                               accuracy_only=accuracy_only)
    except ResultError as exc:
        _fail(str(exc))
    print(md)
    if comp.regressions:
        raise Exit(f"error: {len(comp.regressions)} regression(s) against {baseline}", code=1)


@task(auto_shortflags=False, help={"model": "a model, mmcv-build or locktools (default: every model)",
                                   "upgrade": "re-resolve to the newest allowed versions (default: keep the locked ones)"})
def lock(c, model=None, upgrade=False):
    """Regenerate the models' hash locks from requirements.txt.

    <model folder>/requirements.lock (models/<model>/ or one of ZOO_MODEL_DIRS), with pip-compile."""
    targets = [model] if model else envs.models()
    rc = subprocess.call([sys.executable, str(ROOT / "runner" / "lock.py"), *targets, *(["--upgrade"] if upgrade else [])])
    if rc != 0:
        raise Exit(code=rc)  # lock.py printed its one-line error


@task(auto_shortflags=False)
def lint(c):
    """Lint every Dockerfile with hadolint.

    Every model's Dockerfile (models/ and ZOO_MODEL_DIRS) and the shared runner/dockerfiles/*.Dockerfile."""
    from zoo import registry
    own = [files.dockerfile for files in registry.discover().values() if files.dockerfile.is_file()]
    files = sorted(str(p) for p in (*own, *(ROOT / "runner" / "dockerfiles").glob("*.Dockerfile")))
    rc = subprocess.call(["hadolint", *files])
    if rc:
        raise Exit(code=rc)
    print(f"hadolint: {len(files)} Dockerfile(s) clean")


def _shown(path: Path) -> str:
    """A path relative to the repository when inside it (a model of ZOO_MODEL_DIRS: absolute)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


@task(auto_shortflags=False, help={"json": "the names only, as one JSON list (the CI model matrix reads it)"})
def models(c, json_=False):
    """List the models: each name and its folder.

    The zoo's models/ and the folders of ZOO_MODEL_DIRS (zoo.registry, which every task asks);
    --json prints the names as a JSON list, from which CI makes its model matrix."""
    import json

    from tabulate import tabulate

    from zoo import registry
    from zoo.errors import ZooError
    try:
        found = registry.discover()
    except ZooError as exc:
        _fail(str(exc))
    if json_:
        print(json.dumps(list(found)))
        return
    print(tabulate([(name, _shown(files.dir) + ("  (ZOO_MODEL_DIRS)" if files.plugged else ""))
                    for name, files in found.items()], tablefmt="plain"))


def _cluster_extra() -> None:
    """The host's Ray (requirements-cluster.txt, not in the first set-up command): the test suite runs
    `invoke matrix`, so the test command installs it where it is missing."""
    import importlib.util
    if importlib.util.find_spec("ray") is not None:
        return
    print("== installing the host's cluster extra (requirements-cluster.txt: Ray, for invoke matrix)", flush=True)
    if subprocess.call([sys.executable, "-m", "pip", "install", "--progress-bar", "off", "-q", "-r",
                        str(ROOT / "requirements-cluster.txt")], cwd=ROOT) != 0:
        _fail("could not install requirements-cluster.txt (Ray) on the host: the matrix tests need it", code=1)


@task(auto_shortflags=False, help={"model": "only this model's tests (the per-model CI job; default: every model's)",
                                   "k": "pytest -k expression (default: every test)"},
      log_env=False, log_help={"quiet": "pytest -q (the tests' model processes keep their INFO lines: tests read them)",
                               "verbose": "pytest -v", "debug": "the traceback of an unexpected error of this task"})
def test(c, model=None, k=None):
    """Run the host tests and each model's tests in its environment.

    Host tests: runner, schema, docker, report (tests/runner); then, in each model's environment,
    tests/core and the model's own tests, whichever exist: tests/models/<model> (where the zoo's
    models keep theirs) and the tests/ folder inside the model's folder (where a model of
    ZOO_MODEL_DIRS keeps its own: they travel with it; zoo.registry)."""
    flags = cli.current()
    extra = (["-k", k] if k else []) + (["-q"] if flags.quiet else []) + (["-v"] if flags.verbose else [])
    failed = []
    pythons = {m: _ensure(m) for m in _models(model)}  # first: host tests drive the model processes too
    _cluster_extra()
    print("== host tests (tests/runner)", flush=True)
    if subprocess.call([sys.executable, "-m", "pytest", "tests/runner", *extra], cwd=ROOT) not in (0, 5):
        failed.append("host")
    for m, py in pythons.items():
        targets = ["tests/core"] + [_shown(d) for d in envs.model_files(m).test_dirs]
        print(f"== {m} tests ({' '.join(targets)}) in {py.parent.parent}", flush=True)
        if subprocess.call([str(py), "-m", "pytest", *targets, *extra], cwd=ROOT, env=envs.model_env()) not in (0, 5):
            failed.append(m)
    if failed:
        raise Exit(f"error: tests failed in: {', '.join(failed)}", code=1)


# --------------------------------------------------------------------------- engine-check (issue 14, item 2)
# The check itself: runner/engine_check.py.


def _engine_reachable() -> bool:
    from runner import engine
    return engine.reachable()


def _engine_models(models: str) -> list[str]:
    """engine-check's --models, checked before any step (`--models ,` would install and start an
    engine, build the base image and check no model): known names, none empty."""
    words = [m.strip() for m in str(models).split(",")]
    if not all(words):
        _fail(f"--models: an empty model name in {models!r} (comma-separated names, e.g. unetpp,fcn8s)")
    return [_models(m)[0] for m in words]


@task(auto_shortflags=False, help={
    "models": "comma-separated models to build and run (default unetpp,fcn8s: one plain, one OpenMMLab image)",
    "base-image": "python base image of the builds (default local: runner/base_image.sh makes it)",
    "pip-config": "passed to `invoke build` (default: none)",
    "ca-bundle": "passed to `invoke build` and the base image script (default: none)",
    "wheels": "passed to `invoke build` (default: none)", "mirror": "Debian mirror of the local base image (default: the script's)",
    "no-tests": "skip the engine tests (tests/runner -m engine)",
    "keep-images": "do not remove the zoo's superseded images (invoke prune-images) before and between the builds"},
      values={"pip_config": "path", "ca_bundle": "path", "wheels": "path"})
def engine_check(c, models="unetpp,fcn8s", base_image="local", pip_config=None, ca_bundle=None, wheels=None,
                 mirror=None, no_tests=False, keep_images=False):
    """Check the images end to end on a real Docker engine.

    Install docker.io where it is missing and start dockerd (as root; stopped at the end: only a
    daemon this check started), remove the zoo's superseded images, make the local base image, build each model's
    image, every step (--rebuild; not started with less than ENGINE_BUILD_NEED_GB free: exit 4 if
    that is all that went wrong), remove what it replaced, run its main job with --docker,
    validate the record on the host, build the first model again (only its core may be built),
    run the engine tests; every step timed."""
    from runner import engine_check as check
    check.main(_engine_models(models), base_image=base_image, pip_config=pip_config, ca_bundle=ca_bundle,
               wheels=wheels, mirror=mirror, no_tests=no_tests, keep_images=keep_images)

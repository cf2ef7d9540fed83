"""The zoo's commands (invoke). `python -m invoke --list` shows them.

  invoke setup  --model unetpp          create/reuse the model's environment (.venvs/unetpp)
  invoke run    --model unetpp [...]    run the guide end to end (local env; --docker for the image)
  invoke bench  --model unetpp          PyTorch eager vs the compiled runtime, side by side
  invoke score  RESULT [--data D]      the accuracy again from a run's saved predictions (no inference)
  invoke prep   --model unetpp --bin-dir D   write preprocessed <id>.bin inputs (guide/ais_bench style)
  invoke diagnose --model unetpp --precision int8 [--auto]   where int8 loses accuracy (per layer)
  invoke build  --model unetpp          build the model's Docker image alone
  invoke lock   [--model unetpp]        regenerate the hash lock(s) from requirements.txt (pip-compile)
  invoke report [--results results]     Markdown + HTML report of every result JSON
  invoke compare BASELINE NEW           accuracy deltas and throughput ratios; exit 1 on a regression
  invoke test   [--model unetpp]        the test suite (host tests + each model's, in its env)
  invoke lint                           hadolint every Dockerfile

`run`, `bench` and `prep` take the run options declared in zoo/stages/config.py (one declaration
for these tasks, `python -m zoo` and the isolate config) and pass them on to `python -m zoo`.
"""
from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

from invoke import Exit, task

from runner import ROOT, docker, envs
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
        return envs.ensure(model)
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
    be given if they agree; a path is made absolute (the model process runs in the repo root)."""
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
    return run_config.to_argv(values, command)


def _zoo_task(command: str, **kw):
    """@task for a task that runs `python -m zoo <command>`: the function's own parameters, then
    one keyword parameter per flag of every declared run option (invoke reads a task's
    parameters from its signature), with the declaration's help; the function receives them in
    **options. An own parameter named like a declared option (model, weights, data, out) gets
    the option's help unless `help` gives one."""
    def wrap(fn):
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        helps, iterable, optional = {}, [], []
        for o in run_config.options(command):
            if o.task == "own":
                if o.field in sig.parameters:
                    helps[o.field] = o.help
                continue
            for name, flag in zip(o.names, o.flags):
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                                default=False if o.kind == "switch" else None))
                helps[name] = o.help if flag == o.flag else f"the old name of {o.flag}"
                if o.kind == "pairs":
                    iterable.append(name)
                if o.const is not None:
                    optional.append(name)
        fn.__signature__ = sig.replace(parameters=params)
        return task(fn, auto_shortflags=False, iterable=iterable, optional=optional,
                    help={**helps, **kw.pop("help", {})}, **kw)
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
    written, 130/143) and is waited for; the model process also stops if this one dies
    (ZOO_PARENT_PID: the kernel's parent-death signal). It runs in its own process group, so a
    terminal's Ctrl-C reaches it once, through the forwarding."""
    py = _ensure(model)
    proc = subprocess.Popen([str(py), *argv], cwd=ROOT, env=envs.model_env({"ZOO_PARENT_PID": str(os.getpid())}),
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
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def _summarise(path: Path) -> None:
    rec = load_result(path)
    print(f"result: {path} (valid against schema {rec['schema_version']})")
    for a in rec["accuracy"]:
        ref = a["reference"]
        verdict = {True: "PASS", False: "FAIL", None: "n/a (subset)"}[a["passed"]]
        tail = f" vs {ref['value']:.4f} ({ref['source']}): {verdict}" if ref else ""
        print(f"  accuracy {a['name']}: {a['metric']} {a['value']:.4f} on {a['num_samples']} samples{tail}")
    for p in rec["perf"]:
        if p["status"] != "ok":
            print(f"  bs{p['batch_size']:>3} {p['scope']:<10} FAILED: {p['error']}")
        else:
            print(f"  bs{p['batch_size']:>3} {p['scope']:<10} {p['throughput']:8.1f} samples/s"
                  f"  mean {p['latency_ms']['mean']:.1f} ms/batch")


@task(auto_shortflags=False, help={"model": "model name (default: every model)", "force": "recreate even if up to date"})
def setup(c, model=None, force=False):
    """Create or reuse each model's pinned environment (.venvs/<model>)."""
    for m in _models(model):
        try:
            envs.ensure(m, force=force)
        except envs.EnvError as exc:
            _fail(str(exc))


@_zoo_task("run", help={
    "docker": "run in the model's image instead of the local env", "dry-run": "print the docker commands only",
    "device-type": "auto|cpu|ascend|nvidia (docker)",
    "container-memory": "with --docker: the container's memory limit (docker --memory, e.g. 8g; a number is MB; "
                        "default: none)"})
def run(c, model=None, weights=None, data=None, out=str(RESULTS), docker_=False, dry_run=False, device_type="auto",
        container_memory=None, **options):
    """Run a model's guide end to end; validate the result JSON."""
    model = _need(model)
    zargs = _zoo_args(options, "run", docker_=docker_ or dry_run)
    out = Path(out).resolve()
    if docker_ or dry_run:
        kw = dict(out=out, data=data, weights=weights, device_type=device_type, zoo_args=zargs,
                  memory=container_memory)
        try:
            if dry_run:
                for argv in docker.plan_build(model):  # the shared images, the model's, the core
                    print(docker.format_command(argv))
                for step in docker.plan_prepare(model, **kw):  # the results folder, for the image's user
                    print(docker.format_command(step))
                print(docker.format_command(docker.plan_run(model, **kw)))
                return
            rc = docker.run(model, **kw)
        except docker.DockerError as exc:
            _fail(str(exc))
        if rc != 0:
            raise Exit(code=rc)
        new = sorted((out / model).glob("*.json"), key=lambda p: p.stat().st_mtime)
        if new:
            _summarise(new[-1])
        return
    argv = ["-m", "zoo", "run", "--model", model, "--out", str(out), *zargs, *_paths(weights, data)]
    proc = _in_env(model, argv)
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)  # zoo printed its one-line error on stderr
    try:
        _summarise(Path(proc.stdout.strip().splitlines()[-1]))
    except (ResultError, IndexError) as exc:
        _fail(f"run finished but its result is not valid: {exc}")


@_zoo_task("bench", help={"runtimes": "comma-separated runtimes (default torch,onnxruntime)",
                          "backends": "the old name of --runtimes", "out": "results folder (default: results/bench)",
                          "precisions": "comma-separated precisions side by side, e.g. fp32,bf16 (default: --precision)"})
def bench(c, model=None, weights=None, data=None, out=str(RESULTS / "bench"), runtimes=None, backends=None,
          precisions=None, **options):
    """PyTorch eager vs the compiled runtimes (e.g. --runtimes torch,onnxruntime,openvino), and precisions
    (e.g. --precisions fp32,bf16) side by side: throughput per batch size and the ratios."""
    model = _need(model)
    names = _one_name(runtimes, backends, "--runtimes", "--backends") or "torch,onnxruntime"
    argv = ["-m", "zoo", "bench", "--model", model, "--runtimes", names, "--out", str(Path(out).resolve()),
            *(["--precisions", precisions] if precisions else []), *_zoo_args(options, "bench")]
    argv += _paths(weights, data)
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@_zoo_task("prep", help={"bin-dir": "output folder (must not exist yet)"})
def prep(c, model=None, bin_dir=None, data=None, **options):
    """Write preprocessed inputs as <id>.bin (float32 CHW) for .bin-reading tools (ais_bench)."""
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
                                   "data": "dataset root the labels are read from (default: the path the run recorded)"})
def score(c, result, data=None):
    """Recompute a run's accuracy from its saved predictions (no inference); exit 1 if it differs.

    Runs `python -m zoo score` in the environment of the model the result names."""
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
    "out": "the JSON report's path (default: results/<model>/diagnose-<runtime>-<precision>-<time>.json)"})
def diagnose(c, model=None, weights=None, data=None, out=None, samples=None, auto=False, auto_by=None, top=None,
             **options):
    """Where a reduced-precision model loses accuracy: every shared intermediate tensor compared with
    fp32 on real samples, the first layer where the error jumps, the per-layer sensitivity ranking;
    --auto keeps the most sensitive layers in fp32 until within 1%."""
    model = _need(model)
    argv = ["-m", "zoo", "diagnose", "--model", model, *_zoo_args(options, "diagnose"), *_paths(weights, data)]
    argv += ["--samples", str(samples)] if samples else []
    argv += ["--top", str(top)] if top else []
    argv += ["--auto"] if auto else []
    argv += ["--auto-by", auto_by] if auto_by else []
    argv += ["--out", str(Path(out).resolve())] if out else []
    proc = _in_env(model, argv)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise Exit(code=proc.returncode)


@task(auto_shortflags=False, help={"model": "model name", "tag": "image tag (default zoo/<model>:latest)", "dry-run": "print the command only",
                                   "base-image": "python base image (default: the digest-pinned BASE_IMAGE of runner/dockerfiles/base.Dockerfile)"})
def build(c, model=None, tag=None, dry_run=False, base_image=None):
    """Build one model's Docker image: the shared docker/ images it builds FROM, models/<model>/Dockerfile,
    then runner/dockerfiles/core.Dockerfile on top (context = repo root)."""
    model = _need(model)
    try:
        if dry_run:
            for argv in docker.plan_build(model, tag, docker.current_git_commit(), base_image):
                print(docker.format_command(argv))
            return
        print(docker.build(model, tag, docker.current_git_commit(), base_image=base_image))
    except docker.DockerError as exc:
        _fail(str(exc))


@task(auto_shortflags=False, help={"results": "folder of result JSONs (default: results)", "out": "output folder (default: the results folder)"})
def report(c, results=str(RESULTS), out=None):
    """Markdown + HTML report (accuracy and performance tables, throughput plots)."""
    from runner.report import write_report
    try:
        paths = write_report(Path(results), Path(out) if out else None)
    except ResultError as exc:
        _fail(str(exc))
    print(paths["markdown"])
    print(paths["html"])


@task(auto_shortflags=False, help={
    "baseline": "baseline results (folder or file)", "new": "new results (folder or file)",
    "max-accuracy-drop": "relative accuracy drop that fails (default 0.01)",
    "max-throughput-drop": "relative throughput drop that fails (default 0.10)",
    "allow-missing": "runs/batch sizes only in the baseline do not fail", "out": "write compare.md + compare.json here",
    "accuracy-only": "compare accuracy only, matching runs on any device name (a baseline from another machine)"})
def compare(c, baseline, new, max_accuracy_drop=0.01, max_throughput_drop=0.10, allow_missing=False, out=None,
            accuracy_only=False):
    """Compare two result sets (the CI gate): exit 1 on an accuracy or throughput regression."""
    from runner.compare import run_compare
    try:
        comp, md = run_compare(Path(baseline), Path(new), Path(out) if out else None,
                               max_accuracy_drop=float(max_accuracy_drop),
                               max_throughput_drop=float(max_throughput_drop), allow_missing=allow_missing,
                               accuracy_only=accuracy_only)
    except ResultError as exc:
        _fail(str(exc))
    print(md)
    if comp.regressions:
        raise Exit(f"error: {len(comp.regressions)} regression(s) against {baseline}", code=1)


@task(auto_shortflags=False, help={"model": "a model, mmcv-build or locktools (default: every model)",
                                   "upgrade": "re-resolve to the newest allowed versions (default: keep the locked ones)"})
def lock(c, model=None, upgrade=False):
    """Regenerate hash locks (models/<model>/requirements.lock) from requirements.txt with pip-compile."""
    targets = [model] if model else envs.models()
    rc = subprocess.call([sys.executable, str(ROOT / "runner" / "lock.py"), *targets, *(["--upgrade"] if upgrade else [])])
    if rc != 0:
        raise Exit(code=rc)  # lock.py printed its one-line error


@task(auto_shortflags=False)
def lint(c):
    """hadolint every models/*/Dockerfile and the shared runner/dockerfiles/*.Dockerfile."""
    files = sorted(str(p) for p in (*(ROOT / "models").glob("*/Dockerfile"), *(ROOT / "runner" / "dockerfiles").glob("*.Dockerfile")))
    rc = subprocess.call(["hadolint", *files])
    if rc:
        raise Exit(code=rc)
    print(f"hadolint: {len(files)} Dockerfile(s) clean")


@task(auto_shortflags=False, help={"model": "only this model's tests (the per-model CI job)", "k": "pytest -k expression"})
def test(c, model=None, k=None):
    """Host tests (runner, schema, docker, report) and each model's tests in its own environment."""
    extra = ["-k", k] if k else []
    failed = []
    pythons = {m: _ensure(m) for m in _models(model)}  # first: host tests drive the model processes too
    print("== host tests (tests/runner)", flush=True)
    if subprocess.call([sys.executable, "-m", "pytest", "tests/runner", *extra], cwd=ROOT) not in (0, 5):
        failed.append("host")
    for m, py in pythons.items():
        targets = ["tests/core"] + ([f"tests/models/{m}"] if (ROOT / "tests" / "models" / m).is_dir() else [])
        print(f"== {m} tests ({' '.join(targets)}) in {py.parent.parent}", flush=True)
        if subprocess.call([str(py), "-m", "pytest", *targets, *extra], cwd=ROOT, env=envs.model_env()) not in (0, 5):
            failed.append(m)
    if failed:
        raise Exit(f"error: tests failed in: {', '.join(failed)}", code=1)

"""The command line a new user meets (issue 23, item 2), through the real `python3 -m invoke` and
`python -m zoo`: every option typed and its default in the help, a wrong value refused by invoke
itself in one line naming the command and the flag (exit 2, before any environment or process),
a did-you-mean for a mistyped option, task or model, --debug/-q/-v on every task reaching the
model process (ZOO_LOG_LEVEL, ZOO_DEBUG), and the model process's errors naming `invoke run`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner import envs
from zoo.stages import config

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("run", "bench", "ab", "prep", "diagnose", "matrix", "compare", "report", "score", "setup", "test", "build",
         "base-image", "engine-check", "lock", "lint", "prune-images")
VALUE_NAMES = {"int": "INT", "float": "FLOAT", "path": "PATH", "sizes": "INTS", "pairs": "KEY=VALUE"}


def invoke(*args, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    """`python3 -m invoke ARGS`; `env` adds variables (None: removes one)."""
    merged = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in merged.items() if v is not None})


def options_of(help_text: str) -> dict[str, str]:
    """`invoke --help <task>`'s options: flag spec -> its help, wrapped lines joined."""
    out, spec = {}, None
    for line in help_text.split("Options:", 1)[1].splitlines():
        m = re.match(r"  (-[^\s,]+(?:, -[^\s,]+)?)\s+(.*)", line)
        if m:
            spec = m[1]
            out[spec] = m[2]
        elif spec and line.strip():
            out[spec] += " " + line.strip()
    return out


def one_error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", TASKS)
def test_help_types_every_option_and_shows_its_default(command):
    proc = invoke("--help", command)
    assert proc.returncode == 0, proc.stderr
    opts = options_of(proc.stdout)
    by_flag = {re.split(r"[=\[]", spec.split(", ")[-1])[0]: spec for spec in opts}
    # the output flags of every task
    assert {"-q, --quiet", "-v, --verbose", "--debug"} <= set(opts), sorted(opts)
    for spec, text in opts.items():
        if "=" in spec and not text.startswith(("the old name of", "a single run's")):
            # takes a value: its default (or that it is required) is said
            assert re.search(r"default|required", text, re.IGNORECASE), f"invoke --help {command}: {spec} {text}"
    # the declared run options: the kind's value name, never STRING for a number or a path
    if command in ("run", "bench", "ab", "prep", "diagnose", "matrix"):
        for o in config.options("run" if command == "matrix" else command):
            if o.kind in VALUE_NAMES and not o.metavar and o.task != "own":
                name = "CHOICE" if o.choices else VALUE_NAMES[o.kind]
                for flag in o.flags:
                    assert by_flag[flag] in (f"{flag}={name}", f"{flag}[={name}]"), (flag, by_flag[flag])


def test_run_help_names_numbers_and_their_declared_defaults():
    opts = options_of(invoke("--help", "run").stdout)
    assert not [s for s in opts if s.endswith("=STRING") and s.split("=")[0] in ("--iters", "--limit", "--time-budget")]
    for spec, default in (("--iters=INT", "1000"), ("--time-budget=FLOAT", "10"), ("--workers=INT", "1"),
                          ("--warmup=INT", "3"), ("--out=PATH", "results"), ("--post-workers=CHOICE", "1"),
                          ("--profile[=CALLS]", "0"), ("--limit=INT", "every sample")):
        assert spec in opts, sorted(opts)
        assert re.search(rf"default:? {re.escape(default)}\b", opts[spec]), (spec, opts[spec])
    assert "(one of: fp32, bf16, fp16, int8)" in opts["--precision=CHOICE"]
    assert "--option=KEY=VALUE" in opts and "--model=STRING" in opts and "(required)" in opts["--model=STRING"]
    # the declaration is the one source: its default (1000) is what the help shows
    assert config.option("iterations").default == 1000 and config.option("workers").default == 1


def test_own_options_are_typed_too():
    ab = options_of(invoke("--help", "ab").stdout)
    assert "--min-effect=FLOAT" in ab and "--fail-slower=FLOAT" in ab and "--expect=CHOICE" in ab
    compare = options_of(invoke("--help", "compare").stdout)
    assert "--max-accuracy-drop=FLOAT" in compare and "default 0.01" in compare["--max-accuracy-drop=FLOAT"]
    assert "--baseline=PATH" in compare and "--out=PATH" in compare
    diagnose = options_of(invoke("--help", "diagnose").stdout)
    assert "--samples=INT" in diagnose and "--top=INT" in diagnose and "--auto-by=CHOICE" in diagnose


def test_zoo_help_shows_defaults_and_the_output_flags():
    for command in ("run", "bench", "ab", "prep", "score", "diagnose", "models"):
        proc = subprocess.run([sys.executable, "-m", "zoo", command, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for flag in ("-q, --quiet", "-v, --verbose", "--debug"):
            assert flag in proc.stdout, (command, flag)
    text = " ".join(subprocess.run([sys.executable, "-m", "zoo", "run", "--help"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=120).stdout.split())
    assert "read/preprocess threads in the pipeline (default: 1)" in text


def test_the_task_list_shows_whole_sentences():
    proc = invoke("--list")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines()[1:] if line.strip()]
    names = [line.split()[0] for line in rows if not line.startswith("   ")]
    assert set(TASKS) <= set(names)
    for line in rows:
        assert not line.startswith("   "), f"a description wraps (cut mid-sentence): {line!r}"
        assert line.rstrip().endswith("."), f"not a whole sentence: {line!r}"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args,line", [
    (["run", "--model", "unetpp", "--limit", "abc"], "error: invoke run: --limit: 'abc' is not an integer"),
    (["run", "--model", "unetpp", "--time-budget", "1s"], "error: invoke run: --time-budget: '1s' is not a number"),
    (["run", "--model", "unetpp", "--iters", "0"], "error: invoke run: --iters must be >= 1, got 0"),
    (["run", "--model", "unetpp", "--precision", "int4"],
     "error: invoke run: --precision: 'int4' is not one of fp32, bf16, fp16, int8 (did you mean int8?)"),
    (["bench", "--model", "unetpp", "--batch-sizes", "1,x"],
     "error: invoke bench: --batch-sizes must be comma-separated positive integers, got '1,x'"),
    (["diagnose", "--model", "unetpp", "--samples", "x"], "error: invoke diagnose: --samples: 'x' is not an integer"),
    (["compare", "a", "b", "--min-effect", "1.5"], "error: invoke compare: --min-effect must be a fraction in [0, 1), got '1.5'"),
    (["run", "--model", "unetpp", "--limit"], "error: invoke run: --limit needs a value"),
])
def test_a_wrong_value_is_refused_by_invoke_in_one_line(args, line):
    # one line and nothing else: no environment was checked ("environment ... is up to date"), no process started
    assert one_error_line(invoke(*args)) == line


@pytest.mark.parametrize("args,line", [
    (["run", "--model", "unetpp", "--batch-size", "4"],
     "error: invoke run: no option --batch-size (did you mean --batch-sizes?)"),
    (["rn"], "error: invoke: no task 'rn' (did you mean run?)"),
    (["--help", "rn"], "error: invoke: no task 'rn' (did you mean run?)"),
    (["run", "--model", "unetpp", "--zzz"], "error: invoke run: no option --zzz (invoke --help run lists them)"),
    (["score"], "error: invoke score: missing RESULT (invoke --help score)"),
    (["run", "--model", "unetpp", "-q", "-v"], "error: invoke run: -q/--quiet excludes -v/--verbose and --debug"),
])
def test_a_mistyped_option_or_task_is_one_line_with_a_suggestion(args, line):
    assert one_error_line(invoke(*args)) == line


def test_a_mistyped_model_gets_a_suggestion(tmp_path):
    line = one_error_line(invoke("run", "--model", "unetp", "--out", tmp_path))
    assert line.startswith("error: invoke run: unknown model 'unetp': did you mean unetpp? (known: ") and "fcn8s" in line
    line = one_error_line(invoke("setup", "--model", "UNETPP"))
    assert line.startswith("error: invoke setup: unknown model 'UNETPP': did you mean unetpp?")
    assert "did you mean" not in one_error_line(invoke("setup", "--model", "zzz"))
    assert not list(tmp_path.iterdir())


needs_unetpp = pytest.mark.skipif(not envs.is_current("unetpp"),
                                  reason="needs the unetpp environment (`invoke setup --model unetpp`)")


@needs_unetpp
def test_the_model_process_error_names_the_command_typed(tmp_path):
    # a value invoke passes on and the zoo refuses (its own KEY=VALUE check): `invoke run`, not `python -m zoo run`
    proc = invoke("run", "--model", "unetpp", "--option", "nokey", "--out", tmp_path / "r")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and errors == ["error: invoke run: argument --option: expected KEY=VALUE, got 'nokey'"], \
        proc.stderr
    assert "python -m zoo" not in proc.stderr and "usage:" not in proc.stderr
    # the bare `python -m zoo` keeps its own name
    direct = subprocess.run([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--limit", "x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert one_error_line(direct) == "error: python -m zoo run: argument --limit: invalid int value: 'x'"


# --------------------------------------------------------------------------- --debug, -q, -v


def _model_process_env(flags: list[str], tmp_path: Path) -> tuple[dict, subprocess.CompletedProcess]:
    """`invoke run ... <flags>`: the environment of the model process it starts (read from /proc once
    it runs `-m zoo`), then SIGTERM to invoke (forwarded: the model process stops, nothing written)."""
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "run", "--model", "unetpp", "--batch-sizes", "1",
                             "--iters", "100000", "--time-budget", "600", "--stable-tolerance", "0", "--no-peak",
                             "--out", str(tmp_path / "results"), *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "ZOO_CACHE": str(tmp_path / "cache")})
    env, deadline = None, time.monotonic() + 60
    try:
        while env is None and time.monotonic() < deadline and proc.poll() is None:
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                try:
                    if b"-m\0zoo\0" in Path(f"/proc/{child}/cmdline").read_bytes():  # exec'd: its own environment
                        text = Path(f"/proc/{child}/environ").read_text()
                        env = dict(kv.split("=", 1) for kv in text.split("\0") if "=" in kv)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert env is not None, err[-2000:]
    return env, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@needs_unetpp
@pytest.mark.parametrize("flags,level,debug", [([], None, None), (["-q"], "WARNING", None), (["--verbose"], "DEBUG", None),
                                               (["-v"], "DEBUG", None), (["--debug"], "DEBUG", "1")])
def test_the_output_flags_reach_the_model_process(tmp_path, monkeypatch, flags, level, debug):
    monkeypatch.delenv("ZOO_LOG_LEVEL", raising=False)
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    env, proc = _model_process_env(flags, tmp_path)
    assert (env.get("ZOO_LOG_LEVEL"), env.get("ZOO_DEBUG"), env.get("ZOO_PROG")) == (level, debug, "invoke run")
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: invoke run: ")
    assert not [p for p in (tmp_path / "results").rglob("*") if p.is_file()]


def test_the_output_flags_reach_the_container_command():
    # --docker: the container does not inherit ZOO_LOG_LEVEL; the flags are `python -m zoo` words
    for flag in ("-q", "-v", "--debug"):
        proc = invoke("run", "--model", "unetpp", "--dry-run", flag)
        assert proc.returncode == 0, proc.stderr
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("docker run ") and last.endswith(f" run --model unetpp --out /results {flag}"), last


def test_zoo_sets_the_log_variables_from_its_flags_and_restores_them(monkeypatch):
    from zoo import cli
    seen = []
    monkeypatch.setattr(cli, "_dispatch", lambda args, argv: seen.append(
        (os.environ.get("ZOO_LOG_LEVEL"), os.environ.get("ZOO_DEBUG"), argv)) or 0)
    monkeypatch.setenv("ZOO_LOG_LEVEL", "INFO")
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    for argv in (["models", "-q"], ["-v", "models"], ["models", "--debug"], ["models"]):
        assert cli.main(argv) == 0
    assert seen == [("WARNING", None, ["models"]), ("DEBUG", None, ["models"]), ("DEBUG", "1", ["models"]),
                    ("INFO", None, ["models"])]
    assert os.environ["ZOO_LOG_LEVEL"] == "INFO" and "ZOO_DEBUG" not in os.environ


# --------------------------------------------------------------------------- a task's own failures

TINY_TASKS = textwrap.dedent('''
    import os
    from invoke import Exit
    from runner.cli import task

    @task
    def boom(c):
        """Fail unexpectedly."""
        raise RuntimeError("kaput")

    @task
    def stop(c):
        """Fail with a clear error."""
        raise Exit("error: no such thing", code=3)

    @task
    def levels(c):
        """Print the log variables the children would get."""
        print(f"{os.environ.get('ZOO_LOG_LEVEL')}|{os.environ.get('ZOO_DEBUG')}")
''')


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(tmp_path):
    (tmp_path / "tasks.py").write_text(TINY_TASKS)
    env = {"PYTHONPATH": str(ROOT), "ZOO_LOG_LEVEL": None, "ZOO_DEBUG": None}
    assert one_error_line(invoke("boom", cwd=tmp_path, env=env)) == \
        "error: invoke boom: RuntimeError: kaput (--debug shows the traceback)"
    loud = invoke("boom", "--debug", cwd=tmp_path, env=env)
    assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == "error: invoke boom: RuntimeError: kaput"
    assert one_error_line(invoke("stop", cwd=tmp_path, env=env), code=3) == "error: invoke stop: no such thing"
    for flags, shown in (([], "None|None"), (["-q"], "WARNING|None"), (["-v"], "DEBUG|None"), (["--debug"], "DEBUG|1")):
        proc = invoke("levels", *flags, cwd=tmp_path, env=env)
        assert proc.returncode == 0 and proc.stdout.strip() == shown, (flags, proc.stdout, proc.stderr)

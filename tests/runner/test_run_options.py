"""Every run option is declared once (zoo/stages/config.py) and `python -m zoo run|bench`, the
invoke tasks, the isolate child's config JSON, the checks and the documentation (README.md,
docs/) follow from it: each declared option shows up in each of them, and a new declaration needs
no other edit. Host test: the declaration, the CLI's parser and the tasks import with the standard
library (and invoke)."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import cli
from zoo.errors import ZooError
from zoo.isolate import _config_json
from zoo.stages import config
from zoo.stages.config import OPTIONS, Option, RunConfig, check_config, from_json, from_namespace, to_argv

ROOT = Path(__file__).resolve().parents[2]
REPLACED_IN_THE_CHILD = {"batch_sizes", "out", "isolate", "memory_limit_mb"}


def load_tasks():
    spec = importlib.util.spec_from_file_location("zoo_tasks_options", ROOT / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _help(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _other_value(o: Option):
    """A value of the option's kind that is not its default."""
    if o.choices:
        return next(c for c in o.choices if c != o.default)
    return {"text": f"x-{o.field}", "int": 7, "float": 0.5, "path": Path(f"/p/{o.field}"), "sizes": [2, 3],
            "pairs": {"k": "v", "flag": "true"}, "switch": not o.default}[o.kind]


def _everything_set(**fields):
    return RunConfig(**{**{o.field: _other_value(o) for o in config.OPTIONS}, **fields})


@pytest.mark.parametrize("command", ["run", "bench", "prep", "diagnose"])
def test_every_declared_option_is_in_the_zoo_help_and_the_invoke_help(command):
    zoo_help, task_help = _help("zoo", command, "--help"), _help("invoke", "--help", command)
    for o in config.options(command):
        for flag in o.flags:
            assert re.search(re.escape(flag) + r"\s", zoo_help), f"python -m zoo {command} --help lacks {flag}"
        names = o.flags if o.task != "own" else o.flags[:1]  # an own option: the task's own parameter
        for flag in names:
            assert f"{flag}=" in task_help or f"{flag}[=" in task_help or f"{flag} " in task_help, \
                f"invoke --help {command} lacks {flag}"


def test_every_option_round_trips_through_the_isolate_json(tmp_path):
    cfg = _everything_set()
    back = from_json(_config_json(cfg, 4, tmp_path / "child"))
    for o in OPTIONS:
        if o.field not in REPLACED_IN_THE_CHILD:
            assert getattr(back, o.field) == getattr(cfg, o.field), o.field
    assert back.batch_sizes == [4] and back.out == tmp_path / "child" and not back.isolate and back.memory_limit_mb is None


def test_every_option_round_trips_through_the_command_line():
    for command in ("run", "bench"):
        cfg = _everything_set(**({"runtime": "onnxruntime"} if command == "bench" else {}))
        taken = {o.field for o in config.options(command)}  # run-only options (--shards, ...) keep their defaults
        cfg = RunConfig(**{o.field: getattr(cfg, o.field) if o.field in taken or o.field == "runtime"
                           else (o.default() if callable(o.default) else o.default) for o in config.OPTIONS})
        args = cli.parser().parse_args([command, *to_argv(cfg, command)])
        assert from_namespace(args, **({"runtime": "onnxruntime"} if command == "bench" else {})) == cfg


def test_the_documentation_covers_every_option():
    docs = "\n".join(p.read_text() for p in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))))
    missing = [o.flag for o in OPTIONS if not re.search(re.escape(o.flag) + r"(?![\w-])", docs)]
    assert not missing, f"neither README.md nor docs/*.md mentions {missing}"


@pytest.mark.parametrize("field,value,message", [
    ("threads", -3, "--threads must be >= 1, got -3"),
    ("workers", 0, "--workers must be >= 1, got 0"),
    ("time_budget", 0, "--time-budget must be > 0 seconds, got 0"),
    ("stable_tolerance", 1.5, "--stable-tolerance must be >= 0 and < 1, got 1.5"),
    ("post_workers", 2, "--post-workers must be one of 0, 1, got 2"),
    ("infer_input", "ones", "--input must be one of dataset, zeros, random, got 'ones'"),
    ("profile", -1, "--profile must be >= 0, got -1"),
])
def test_declared_ranges_and_choices_are_checked_first(field, value, message):
    with pytest.raises(ZooError) as ei:
        check_config(RunConfig(model="no-such-model", **{field: value}))
    assert str(ei.value) == message


def test_a_new_declared_option_needs_no_other_edit(monkeypatch, tmp_path):
    new = (Option("colour", ("--colour", "--color"), default="red", help="the colour of the test"),
           Option("repeats", ("--repeats",), "int", default=1, bounds=((">=", 1),), help="repeats of the test"))
    monkeypatch.setattr(config, "OPTIONS", OPTIONS + new)
    monkeypatch.setattr(config, "RunConfig", config.make_run_config(config.OPTIONS))
    # python -m zoo run / bench
    args = cli.parser().parse_args(["run", "--model", "unetpp", "--color", "blue", "--repeats", "3"])
    cfg = config.from_namespace(args)
    assert (cfg.colour, cfg.repeats) == ("blue", 3)
    assert config.from_namespace(cli.parser().parse_args(["bench", "--model", "unetpp", "--colour", "blue"]),
                                 runtime="torch").colour == "blue"
    # the isolate child's JSON, and an old name as its key
    back = config.from_json(_config_json(cfg, 1, tmp_path))
    assert (back.colour, back.repeats) == ("blue", 3)
    assert config.from_json('{"model": "unetpp", "color": "green"}').colour == "green"
    # the checks
    with pytest.raises(ZooError, match="--repeats must be >= 1, got 0"):
        config.check_config(dataclasses.replace(cfg, repeats=0))
    # invoke: the task's parameters (as invoke reads them) and what it passes on
    tasks = load_tasks()
    helps = {arg.name: arg.help for arg in tasks.run.get_arguments()}
    assert helps["colour"] == "the colour of the test (default: red)" and helps["color"] == "the old name of --colour"
    assert tasks._zoo_args({"color": "blue", "repeats": "3"}) == ["--colour", "blue", "--repeats", "3"]


# --- issue 21: options that must be refused or mean what they say (host side) -------------------

def test_invoke_passes_on_every_value_given_a_default_one_too():
    # diagnose's own --precision default is int8: the run option's default (fp32) given to
    # `invoke diagnose` must reach it, and so must any value equal to a default
    tasks = load_tasks()
    assert tasks._zoo_args({"precision": "fp32"}, "diagnose") == ["--precision", "fp32"]
    assert tasks._zoo_args({"calib_size": "32", "calib_seed": "0"}) == ["--calib-size", "32", "--calib-seed", "0"]
    assert tasks._zoo_args({"calib_from_eval": True}) == ["--calib-from-eval"]
    assert tasks._zoo_args({"precision": None, "calib_from_eval": False}) == []
    # a config's own command line (bench, isolate) still leaves its defaults out
    assert to_argv(RunConfig(model="unetpp")) == ["--model", "unetpp"]


def test_the_command_line_tells_a_typed_default_from_an_untyped_one():
    assert "calib_size" in cli.typed_fields(["run", "--model", "m", "--calib-size", "32"])
    assert "calib_size" not in cli.typed_fields(["run", "--model", "m"])
    assert {"calib_from_eval", "options"} <= cli.typed_fields(["bench", "--model", "m", "--calib-from-eval",
                                                              "--option", "a=1", "--option", "b=2"])
    args = cli.parser().parse_args(["run", "--model", "m", "--option", "a=1", "--option", "b=2"])
    assert args.options == {"a": "1", "b": "2"} and args.calib_size == 32


def test_a_negative_seed_is_refused_naming_the_option():
    with pytest.raises(ZooError) as ei:
        check_config(RunConfig(model="no-such-model", calib_seed=-1))
    assert str(ei.value) == "--calib-seed must be >= 0, got -1"


def _one_line_failure(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,needles", [
    (["run", "--model", "unetpp", "--iters", "abc"], ["argument --iters", "invalid int value: 'abc'"]),
    (["run", "--model", "unetpp", "--time-budget", "1s"], ["argument --time-budget", "invalid float value: '1s'"]),
    (["diagnose", "--model", "unetpp", "--samples", "x"], ["argument --samples", "invalid int value: 'x'"]),
    (["run", "--model", "unetpp", "--precision", "int4"], ["argument --precision", "invalid choice: 'int4'"]),
])
def test_a_bad_number_on_the_zoo_command_line_is_one_line(args, needles, tmp_path):
    # argparse's own errors (usage block + message) become the zoo's one line, exit 2
    proc = subprocess.run([sys.executable, "-m", "zoo", *args, "--out", str(tmp_path / "r")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    _one_line_failure(proc, *needles)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value", [("--max-accuracy-drop", "abc"), ("--max-throughput-drop", "1e"),
                                        ("--max-accuracy-drop", "nan"), ("--max-accuracy-drop", "1.5")])
def test_compare_thresholds_that_are_not_fractions_are_one_line(flag, value, tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "invoke", "compare", str(tmp_path), str(tmp_path), flag, value,
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_failure(proc, flag, repr(value))
    assert not out.exists()

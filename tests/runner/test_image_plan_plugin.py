"""A model of ZOO_MODEL_DIRS has an image like the zoo's own (runner.image_plan, runner.engine).

Its Dockerfile and the core's copy `models/<name>/` of the build context: its folder is placed there
(image_plan.context_dirs), in the content tag of its environment image (named by that path, so the tag does not
depend on where the folder is on the host) and in the context runner.engine sends to the Docker engine (the
.dockerignore applied to those paths). No daemon: the SDK's side is a recording client."""
from __future__ import annotations

import shutil
import tarfile

import pytest

from runner import MODELS_DIR, ROOT, engine, image_plan
from runner import docker as rd

NAME = "zz_plugged"
IN_CONTEXT = f"models/{NAME}"


def make_plugin(parent):
    """unetpp's image files (its Dockerfile copying models/<NAME>/, its lock, its manifest) as the model NAME,
    with code, its own tests and leftovers .dockerignore leaves out (__pycache__, *.onnx)."""
    folder = parent / NAME
    (folder / "tests").mkdir(parents=True)
    (folder / "__pycache__").mkdir()
    for name in ("requirements.lock", "model.yaml"):
        shutil.copy2(MODELS_DIR / "unetpp" / name, folder / name)
    (folder / "Dockerfile").write_text((MODELS_DIR / "unetpp" / "Dockerfile").read_text()
                                       .replace("models/unetpp/", f"{IN_CONTEXT}/"))
    (folder / "__init__.py").write_text("")
    (folder / "adapter.py").write_text("class Adapter:\n    pass\n")
    (folder / "tests" / "test_own.py").write_text("def test_own():\n    pass\n")
    (folder / "__pycache__" / "adapter.cpython-311.pyc").write_bytes(b"\0")
    (folder / "export.onnx").write_bytes(b"\0")
    return folder


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    folder = make_plugin(tmp_path / "plugins")
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(folder.parent))
    return folder


def env_tag(model=NAME):
    return rd.prepare_build(model, git_commit="c", host_mmcv=False)[1].tag


def test_the_plan_places_its_folder_at_models_name(plugin):
    base, env, core = rd.prepare_build(NAME, git_commit="c")
    assert rd.dockerfile_path(NAME) == plugin / "Dockerfile" == env.dockerfile
    assert base.dockerfile == ROOT / "runner" / "dockerfiles" / "base.Dockerfile" and base.context_dirs == ()
    assert env.context_dirs == core.context_dirs == ((IN_CONTEXT, plugin),)
    assert env.context_dockerfile == f"{IN_CONTEXT}/Dockerfile"
    assert core.context_dockerfile == "runner/dockerfiles/core.Dockerfile"
    assert env.tag.startswith(f"zoo/{NAME}-env:") and dict(env.buildargs) == {"ZOO_BASE": base.tag}
    assert core.tag == f"zoo/{NAME}:latest" and dict(core.buildargs)["MODEL"] == NAME
    assert rd.declared_devices(NAME) == rd.declared_devices("unetpp")
    # the zoo's own models: nothing added to their context
    assert all(s.context_dirs == () for s in rd.prepare_build("unetpp", git_commit="c"))


def test_its_content_tag_is_its_files_by_their_path_in_the_context(plugin, tmp_path, monkeypatch):
    """What its Dockerfile copies from its folder decides its tag (not its other files, not where the folder is);
    the same files in the repo's models/ give the same tag."""
    tag = env_tag()
    (plugin / "adapter.py").write_text("class Adapter:\n    changed = True\n")  # copied by the core only
    assert env_tag() == tag
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(plugin, elsewhere / NAME)
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(elsewhere))
    assert env_tag() == tag
    repo = tmp_path / "repo"  # a repo root whose models/ holds it, as the zoo's own models are
    shutil.copytree(ROOT / "runner" / "dockerfiles", repo / "runner" / "dockerfiles")
    shutil.copytree(plugin, repo / "models" / NAME)
    monkeypatch.setattr(image_plan, "ROOT", repo)
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(repo / "models"))
    assert image_plan.context_dirs(NAME) == ()
    assert env_tag() == tag
    monkeypatch.setattr(image_plan, "ROOT", ROOT)
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(plugin.parent))
    (plugin / "requirements.lock").write_text("changed==1\n")  # what its Dockerfile copies
    assert env_tag() != tag


def test_a_missing_dockerfile_names_the_plugged_file(plugin):
    (plugin / "Dockerfile").unlink()
    with pytest.raises(rd.UnknownModel) as err:
        rd.prepare_build(NAME)
    assert str(err.value) == f"unknown model {NAME!r}: no {plugin / 'Dockerfile'}"


class RecordingClient:
    """The SDK calls build() makes; each sent context's members under models/<NAME>/, with the lock's bytes."""

    def __init__(self):
        self.api = self.images = self
        self.builds = []

    def build(self, **kw):
        sent = None
        if kw.get("custom_context"):
            with tarfile.open(fileobj=kw["fileobj"]) as tar:
                names = tar.getnames()
                sent = {"plugin": sorted(n for n in names if n == IN_CONTEXT or n.startswith(IN_CONTEXT + "/")),
                        "lock": tar.extractfile(f"{IN_CONTEXT}/requirements.lock").read(),
                        "repo": {"zoo/__init__.py", "models/unetpp/Dockerfile", "schema"} <= set(names)}
        self.builds.append({**{k: v for k, v in kw.items() if k != "fileobj"}, "sent": sent})
        return iter([{"stream": "ok\n"}])

    def get(self, tag):
        return type("Image", (), {"id": "sha256:feed", "tags": [tag]})()


def test_build_sends_its_folder_to_its_build_and_the_core(plugin, monkeypatch):
    client = RecordingClient()
    monkeypatch.setattr(engine, "connect", lambda: client)
    monkeypatch.setattr(engine.image_store, "reusable", lambda *a, **k: False)
    monkeypatch.setattr(engine.image_store, "drop_stages", lambda *a, **k: None)
    lines = []
    assert rd.build(NAME, git_commit="c", log=lines.append, host_mmcv=False) == "sha256:feed"
    base, env, core = client.builds
    assert base["path"] == str(ROOT) and base["sent"] is None  # the shared base: the repo as it is
    assert [env["dockerfile"], core["dockerfile"]] == [f"{IN_CONTEXT}/Dockerfile", "runner/dockerfiles/core.Dockerfile"]
    expected = [IN_CONTEXT, *(f"{IN_CONTEXT}/{n}" for n in (
        "Dockerfile", "__init__.py", "adapter.py", "model.yaml", "requirements.lock", "tests", "tests/test_own.py"))]
    for step in (env, core):
        assert step["custom_context"] and step["sent"]["repo"]
        assert step["sent"]["plugin"] == expected  # no __pycache__, no *.onnx (.dockerignore)
        assert step["sent"]["lock"] == (plugin / "requirements.lock").read_bytes()
    assert f"==> {env['tag']} ({IN_CONTEXT}/Dockerfile)" in lines

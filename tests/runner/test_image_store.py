"""The zoo's images on the engine's disk (runner/image_store.py): reuse of content-tagged images,
the build stages a build removes, the superseded images `invoke prune-images` removes.

The unit tests drive runner.docker.build with a fake engine that keeps images as a real one does
(ids, tags, parents, layers; removing an image removes its untagged parents); the engine tests at
the end check the same on a real daemon, on the images `invoke engine-check` built."""
from __future__ import annotations

import hashlib
import os

import docker.errors
import pytest

from runner import engine as sdk, image_store
from runner import docker as rd

MODEL = "unetpp"


class Image:
    def __init__(self, engine, image_id, tags, layers, parent, labels=None, created="2026-11-28T00:00:00Z"):
        self.engine, self.id, self.tags = engine, image_id, list(tags)
        self.short_id = image_id[:19]
        self.attrs = {"RootFS": {"Layers": list(layers)}, "Parent": parent, "Size": 10**9,
                      "Config": {"Labels": dict(labels or {})}, "Created": created}
        self.labels = dict(labels or {})


class Engine:
    """A classic builder's image store: each build step makes an image (id, parent, layers); a
    multi-stage build logs its steps as `docker build` does; ``images.remove`` untags or deletes
    (with the untagged parents nothing else needs), refusing an image with children."""

    def __init__(self):
        self.api = self.images = self
        self.containers = self
        self.store: dict[str, Image] = {}
        self.builds: list[dict] = []
        self.removed: list[str] = []
        self.used_by_containers: set[str] = set()
        self._n = 0

    # -- helpers
    def new_id(self):
        self._n += 1
        return "sha256:" + hashlib.sha256(str(self._n).encode()).hexdigest()

    def add(self, tags=(), layers=("base-layer",), parent="", labels=None, created="2026-11-28T00:00:00Z"):
        image = Image(self, self.new_id(), tags, layers, parent, labels, created)
        self.store[image.id] = image
        return image

    def by_name(self, name):
        for image in self.store.values():
            if name in image.tags or image.id == name or image.id.removeprefix("sha256:").startswith(name):
                return image
        return None

    # -- SDK surface
    def get(self, name):
        image = self.by_name(name)
        if image is None:
            raise docker.errors.ImageNotFound(name)
        return image

    def list(self, all=False):  # images.list
        return list(self.store.values())

    def remove(self, name):
        image = self.by_name(name)
        if image is None:
            raise docker.errors.ImageNotFound(name)
        if ":" in name and not name.startswith("sha256:") and len(image.tags) > 1:
            image.tags.remove(name)
            return
        if any(other.attrs["Parent"] == image.id for other in self.store.values()):
            raise docker.errors.APIError(f"conflict: unable to delete {name} (cannot be forced) - image has dependent child images")
        del self.store[image.id]
        self.removed.append(image.id)
        parent = self.store.get(image.attrs["Parent"])
        while parent is not None and not parent.tags and not any(
                o.attrs["Parent"] == parent.id for o in self.store.values()):
            del self.store[parent.id]
            self.removed.append(parent.id)
            parent = self.store.get(parent.attrs["Parent"])

    def build(self, **kw):
        """A build of the step: FROM its base as it is now, a two-stage Dockerfile (the model's)
        leaves its install stage behind as `docker build` does."""
        self.builds.append(kw)
        step = next(s for s in self.plan if s.tag == kw["tag"])
        base = self.by_name(rd.from_image(step))
        base_layers = base.attrs["RootFS"]["Layers"] if base else ["pulled-" + rd.from_image(step)]
        if base is None:
            base = self.add([rd.from_image(step)], base_layers)
        log = [f"Step 1/4 : FROM {base.tags[0]} AS install\n", f" ---> {base.id[7:19]}\n"]
        stage = self.add((), [*base_layers, "venv-" + kw["tag"]], base.id)
        log += ["Step 2/4 : RUN install\n", f" ---> Running in {stage.id[7:19]}\n",
                f"Removing intermediate container {stage.id[7:19]}\n", f" ---> {stage.id[7:19]}\n"]
        final = self.add([kw["tag"]], [*base_layers, "copy-" + kw["tag"]], base.id, labels=kw.get("labels"))
        if kw.get("custom_context"):
            kw["fileobj"].close()
        for image in self.store.values():  # the tag moves to the new image
            if image is not final and kw["tag"] in image.tags:
                image.tags.remove(kw["tag"])
        log += ["Step 3/4 : FROM " + base.tags[0] + "\n", f" ---> {base.id[7:19]}\n",
                "Step 4/4 : COPY --from=install /opt/venv /opt/venv\n", f" ---> {final.id[7:19]}\n",
                f"Successfully built {final.id[7:19]}\n"]
        return iter([{"stream": line} for line in log])

    def info(self):
        return {"DockerRootDir": "/nonexistent"}


@pytest.fixture
def engine(monkeypatch):
    eng = Engine()
    eng.plan = rd.prepare_build(MODEL, git_commit="c", base_image="local", host_mmcv=False)
    eng.add([rd.LOCAL_BASE_IMAGE], ["debian-layer"])
    monkeypatch.setattr(sdk, "connect", lambda: eng)
    monkeypatch.setattr(image_store, "_in_use", lambda client: client.used_by_containers)
    return eng


def _build(eng, **kw):
    lines = []
    rd.build(MODEL, git_commit="c", base_image="local", host_mmcv=False, log=lines.append, **kw)
    return lines


def test_stage_tracker_reads_the_classic_builders_log():
    """Lines of a real `docker build` of models/unetpp/Dockerfile (engine-check, 2026-11-28)."""
    tracker = image_store.StageTracker()
    for line in ["Step 1/8 : ARG ZOO_BASE", "Step 2/8 : FROM ${ZOO_BASE} AS install", " ---> eaa7a83f0279",
                 "Step 3/8 : COPY models/unetpp/requirements.lock /tmp/", " ---> e74c9433fe96",
                 "Step 5/8 : RUN zoo-install-lock /tmp/requirements.lock", " ---> Running in a5962ee9ded7",
                 "Removing intermediate container a5962ee9ded7", " ---> 961837292af0",
                 "Step 6/8 : FROM ${ZOO_BASE}", " ---> eaa7a83f0279",
                 "Step 7/8 : COPY --from=install /opt/venv/ /opt/venv/", " ---> 3a1b2c3d4e5f",
                 "Successfully built 3a1b2c3d4e5f"]:
        tracker.feed(line)
    assert tracker.ends == ["961837292af0"]
    single = image_store.StageTracker()
    for line in ["Step 1/2 : FROM zoo/base:1", " ---> eaa7a83f0279", "Step 2/2 : COPY zoo/ /opt/zoo/zoo/",
                 " ---> 0123456789ab"]:
        single.feed(line)
    assert single.ends == []


def test_a_build_removes_its_stages_and_reuses_what_is_here(engine):
    lines = _build(engine)
    assert [b["tag"] for b in engine.builds] == [s.tag for s in engine.plan]
    # no untagged image is left: every install stage was removed after its build
    assert [i for i in engine.store.values() if not i.tags] == []
    assert sum("removed the build stage(s)" in line for line in lines) == 3
    # again: the base and the environment are here, on their current base: only the core is built
    engine.builds.clear()
    lines = _build(engine)
    assert [b["tag"] for b in engine.builds] == [engine.plan[-1].tag]
    assert [line for line in lines if "not built again" in line] == [
        f"==> {engine.plan[0].tag} (runner/dockerfiles/base.Dockerfile): here already, on its current base: not built again",
        f"==> {engine.plan[1].tag} (models/unetpp/Dockerfile): here already, on its current base: not built again"]
    # --rebuild: every step
    engine.builds.clear()
    _build(engine, rebuild=True)
    assert [b["tag"] for b in engine.builds] == [s.tag for s in engine.plan]


def test_other_build_inputs_build_the_environment_again(engine, tmp_path):
    """The inputs decide no tag, but an environment installed with another pip.conf (another
    index) is not the one asked for: it is reused for the same inputs only."""
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://index.invalid/simple\n")
    _build(engine, inputs=rd.build_inputs(pip_config=conf))
    env = engine.by_name(engine.plan[1].tag)
    assert env.labels[rd.INPUTS_LABEL].startswith("pip.conf sha256:")
    engine.builds.clear()
    _build(engine, inputs=rd.build_inputs(pip_config=conf))
    assert [b["tag"] for b in engine.builds] == [engine.plan[-1].tag]
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n")
    engine.builds.clear()
    _build(engine, inputs=rd.build_inputs(pip_config=conf))
    assert [b["tag"] for b in engine.builds] == [engine.plan[1].tag, engine.plan[-1].tag]


def test_a_base_made_again_is_a_new_base(engine):
    """The local python base is a name, not a digest: made again, it has other layers, and what is
    built on it is built again though no tag changed."""
    _build(engine)
    engine.by_name(rd.LOCAL_BASE_IMAGE).tags.clear()
    engine.add([rd.LOCAL_BASE_IMAGE], ["debian-layer-remade"])
    engine.builds.clear()
    _build(engine)
    assert [b["tag"] for b in engine.builds] == [s.tag for s in engine.plan]


def test_a_stage_in_use_is_kept_and_said(engine):
    original = engine.remove

    def refuse(name):
        if not engine.by_name(name).tags:
            raise docker.errors.APIError("conflict: image is being used by running container 1234")
        original(name)

    engine.remove = refuse
    lines = _build(engine)
    kept = [line for line in lines if "kept the build stage" in line]
    assert len(kept) == 3 and "being used by running container" in kept[0]
    assert len([i for i in engine.store.values() if not i.tags]) == 3


def test_superseded_lists_only_the_zoos_leftovers_and_prune_removes_them(engine):
    _build(engine)
    current = {s.tag for s in engine.plan[:-1]}
    env = engine.by_name(engine.plan[1].tag)
    old_env = engine.add(["zoo/unetpp-env:000000000000"], ["old"], created="2026-11-01T00:00:00Z")
    old_final = engine.add([], ["old", "core"], old_env.id, labels={image_store.MODEL_LABEL: MODEL},
                           created="2026-11-01T01:00:00Z")
    stage = engine.add([], ["x"], env.id, created="2026-11-02T00:00:00Z")  # a stage built on a zoo image
    foreign = engine.add([], ["y"], engine.add(["debian:12"], ["d"]).id)  # someone else's, untagged
    other = engine.add(["me/tool:1", "zoo/somethingelse:1"], ["z"])  # not a zoo repository we tag by hash
    cache = engine.add([], ["c"], env.id)  # an intermediate layer of a tagged image: its builder cache
    engine.add(["zoo/unetpp:mine"], ["c", "d"], cache.id)
    stale = image_store.superseded(engine, [MODEL])
    assert [(s.image_id, s.name) for s in stale] == [
        (stage.id, stage.short_id.removeprefix("sha256:")), (old_final.id, old_final.short_id.removeprefix("sha256:")),
        (old_env.id, "zoo/unetpp-env:000000000000")]
    assert "build stage" in stale[0].why and "older final image" in stale[1].why
    assert not current & {s.name for s in stale}

    lines = []
    assert image_store.prune(engine, dry_run=True, models=[MODEL], log=lines.append) == (0, 0)
    assert len(lines) == 3 and all(line.startswith("would remove ") for line in lines)
    assert old_env.id in engine.store

    engine.used_by_containers = {stage.id}
    lines = []
    removed, _ = image_store.prune(engine, models=[MODEL], log=lines.append)
    assert removed == 2 and stage.id in engine.store and lines[0] == f"kept {stale[0].name}: a container uses it"
    assert old_env.id not in engine.store and old_final.id not in engine.store
    assert foreign.id in engine.store and other.id in engine.store and cache.id in engine.store
    assert all(engine.by_name(tag) for tag in current)


def test_free_bytes_is_none_for_a_remote_engine(monkeypatch, tmp_path):
    class Local:
        def info(self):
            return {"DockerRootDir": str(tmp_path)}

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert image_store.free_bytes(Local()) > 0
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert image_store.free_bytes(Local()) is None


# --------------------------------------------------------------------------- engine: the real builder


@pytest.mark.engine
def test_real_builds_leave_no_build_stage_behind():
    """On the images `invoke engine-check` built in this run (it removes the superseded ones
    first): no untagged build stage of a zoo image is left on the engine (the classic builder
    leaves each stage, a whole environment, behind; the build removes them)."""
    built = os.environ.get("ZOO_ENGINE_BUILT")
    if not built:
        pytest.skip("looks at what `invoke engine-check` built in this run")
    try:
        client = sdk.connect()
    except rd.DockerError as exc:
        pytest.skip(f"no Docker daemon: {exc}")
    left = [s for s in image_store.superseded(client) if "build stage" in s.why]
    assert left == []
    for model in built.split(","):  # and each built environment is here, reusable as it is
        step = rd.prepare_build(model, git_commit="", base_image=os.environ.get("ZOO_ENGINE_BASE", "local"))[-2]
        assert image_store.reusable(client, step.tag, rd.from_image(step))

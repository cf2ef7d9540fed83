"""What the zoo's images hold on the Docker engine's disk, and how it is kept small.

A model's image is three builds (``runner.image_plan.prepare_build``): shared images and the model's
environment, each tagged ``<repository>:<hash of what it is built from>``, then the core on top.
On the classic builder (the one the Docker SDK drives) every multi-stage build leaves its earlier
stages behind as untagged images, a full environment each (the install stage of an image is as
large as the image: 2-3 GB), and every lock change leaves the previous environment's tags behind.
A machine that builds often fills its disk with them (a CI run failed so: "no space left on
device" in the middle of the second image).

- ``reusable``: a content-tagged image that is already here, on the image its last stage builds
  FROM as that image is now, is not built again (its tag is the hash of everything else).
- ``StageTracker`` / ``drop_stages``: the images a build's earlier stages ended at (read off its
  log), removed once the build succeeded: reuse by tag makes them no cache worth keeping.
- ``superseded``: the zoo's images that no build of the current tree makes (older tags of
  ``zoo/base``, ``zoo/mmcv``, ``zoo/<model>-env``; untagged leftovers of zoo builds); ``prune``
  removes them (``invoke prune-images``; ``invoke engine-check`` before it builds).
- ``free_bytes``: the free space of the engine's data root (local engines only).

Images that are not the zoo's are never touched. Pruning while a zoo build runs on the same
engine may remove an intermediate image that build is about to use (it then fails and can be
run again); the builds themselves only remove their own stages, though two identical builds at
the same moment share them through the builder's cache, and the first to end removes them under
the other (which then fails with docker's error, and succeeds when run again).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from runner.docker_errors import one_line
from runner.image_plan import SHARED_IMAGES, prepare_build
from zoo import registry

# `docker build` (classic builder) log lines: a step's resulting image, and a step that starts a stage.
_LAYER_ID = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")
_FROM_STEP = re.compile(r"^Step \d+/\d+ : FROM\s", re.IGNORECASE)
# The label core.Dockerfile gives every final image (its model).
MODEL_LABEL = "io.zoo.model"
GB = 1e9


class StageTracker:
    """Fed a build's log lines: the ids of the images its stages ended at, but the last stage's
    (the built image): ``ends``. A stage ends at the last step image before the next FROM."""

    def __init__(self) -> None:
        self.ends: list[str] = []
        self._last: str | None = None
        self._in_stage = False

    def feed(self, line: str) -> None:
        found = _LAYER_ID.match(line)
        if found:
            self._last = found.group(1)
        elif _FROM_STEP.match(line):
            if self._in_stage and self._last and self._last not in self.ends:
                self.ends.append(self._last)
            self._in_stage, self._last = True, None


def _not_found() -> type[Exception]:
    import docker.errors

    return docker.errors.ImageNotFound


def _get(client: Any, name: str) -> Any | None:
    try:
        return client.images.get(name)
    except _not_found():
        return None


def _layers(image: Any) -> list[str]:
    return list(((image.attrs or {}).get("RootFS") or {}).get("Layers") or [])


def reusable(client: Any, tag: str, from_image: str | None, labels: dict[str, str] | None = None) -> bool:
    """``tag`` is here, carries ``labels`` (the build inputs it was built with) and is built on
    ``from_image`` as it is here now (its layers start with that image's): e.g. a local base image
    made again is a new base, and what is built on it is built again, though its tag (a name)
    did not change."""
    image = _get(client, tag)
    if image is None or not from_image:
        return False
    have = getattr(image, "labels", None) or {}
    if any(have.get(key) != value for key, value in (labels or {}).items()):
        return False
    base = _get(client, from_image)
    if base is None:
        return False
    base_layers = _layers(base)
    return bool(base_layers) and _layers(image)[:len(base_layers)] == base_layers


def drop_stages(client: Any, ids: Iterable[str], log: Callable[[str], None]) -> list[str]:
    """Remove the untagged images ``ids`` (a build's earlier stages, ``StageTracker.ends``) with
    their untagged parents; a tagged one (a stage that is only a named image) and one that is in
    use are kept. Returns the removed ids."""
    removed = []
    for image_id in ids:
        image = _get(client, image_id)
        if image is None or image.tags:
            continue
        try:
            client.images.remove(image.id)
            removed.append(image_id)
        except Exception as exc:  # in use (a container, a child image): kept, said
            log(f"    kept the build stage {image_id}: {_reason(exc)}")
    if removed:
        log(f"    removed the build stage(s) {', '.join(removed)} (untagged; the image's tag is reused instead)")
    return removed


def _reason(exc: BaseException) -> str:
    return one_line(getattr(exc, "explanation", None) or str(exc) or type(exc).__name__, 200)


# --------------------------------------------------------------------------- superseded images


def zoo_repositories(models: Iterable[str]) -> set[str]:
    """The repositories whose tags are content hashes (``runner.image_plan.SHARED_IMAGES``, the models'
    ``zoo/<model>-env``)."""
    return {repo for _, repo in SHARED_IMAGES.values()} | {f"zoo/{m.lower()}-env" for m in models}


def current_tags(models: Iterable[str]) -> set[str]:
    """The content tags the current tree builds, for every model, on the pinned python base and on
    the local one, with the host's mmcv wheel and without (a build on either is current)."""
    tags = set()
    for model in models:
        for base_image in (None, "local"):
            for host_mmcv in (True, False):
                steps = prepare_build(model, git_commit="", base_image=base_image, host_mmcv=host_mmcv)
                tags.update(step.tag for step in steps[:-1])
    return tags


def image_models() -> list[str]:
    """The models that have an image: those with a Dockerfile (zoo.registry)."""
    return [name for name, files in registry.discover().items() if files.dockerfile.is_file()]


@dataclass(frozen=True)
class Stale:
    """An image ``prune`` removes: ``name`` is a tag (removed: untagged, and deleted with its
    untagged parents when it was the image's last tag) or an untagged image's short id (one no
    other image builds on: a dangling image, not an intermediate layer of a tagged one)."""

    name: str
    image_id: str
    why: str


def superseded(client: Any, models: Iterable[str] | None = None) -> list[Stale]:
    """The zoo's images no build of the current tree makes, untagged ones first (newest first, so
    that a child goes before its parent): untagged leftovers of zoo builds (an older final image,
    labelled ``io.zoo.model``; an untagged image whose nearest tagged ancestor is a ``zoo/`` image:
    a build stage), then the tags of ``zoo_repositories`` that ``current_tags`` does not list."""
    models = list(models or image_models())
    repositories, keep = zoo_repositories(models), current_tags(models)
    images = client.images.list(all=True)  # intermediate images too: the parents to walk
    by_id = {image.id: image for image in images}
    parents = {(image.attrs or {}).get("Parent") for image in images}

    def zoo_ancestor(image: Any) -> bool:
        seen = set()
        parent = (image.attrs or {}).get("Parent")
        while parent and parent in by_id and parent not in seen:
            seen.add(parent)
            tags = by_id[parent].tags
            if tags:
                return any(t.startswith("zoo/") for t in tags)
            parent = (by_id[parent].attrs or {}).get("Parent")
        return False

    untagged, tagged = [], []
    for image in images:
        attrs = image.attrs or {}
        if not image.tags:
            if image.id in parents:  # an intermediate image of a tagged one (its builder cache)
                continue
            if MODEL_LABEL in ((attrs.get("Config") or {}).get("Labels") or {}):
                why = "an older final image of the zoo (untagged)"
            elif zoo_ancestor(image):
                why = "a leftover build stage of a zoo image (untagged)"
            else:
                continue
            untagged.append((attrs.get("Created") or "", Stale(image.short_id.removeprefix("sha256:"),
                                                                 image.id, why)))
            continue
        for tag in image.tags:
            repository = tag.rsplit(":", 1)[0]
            if repository in repositories and tag not in keep:
                tagged.append(Stale(tag, image.id, "built from an older tree (not a tag the current tree builds)"))
    untagged.sort(key=lambda pair: pair[0], reverse=True)
    return [stale for _, stale in untagged] + sorted(tagged, key=lambda s: s.name)


def _in_use(client: Any) -> set[str]:
    """Image ids of the engine's containers (running or not): never removed."""
    return {getattr(c, "attrs", {}).get("Image") or "" for c in client.containers.list(all=True)}


def prune(client: Any, *, dry_run: bool = False, models: Iterable[str] | None = None,
          log: Callable[[str], None] = print) -> tuple[int, int | None]:
    """Remove ``superseded`` images (``dry_run``: list them only); one line each. Returns
    (removed, free bytes gained on the engine's data root: 0 for a dry run, None when the
    engine is not local)."""
    stale = superseded(client, models)
    used = _in_use(client)
    before = free_bytes(client)
    removed = 0
    for item in stale:
        line = f"{item.name}: {item.why}"
        if dry_run:
            log(f"would remove {line}")
            continue
        if item.image_id in used:
            log(f"kept {item.name}: a container uses it")
            continue
        try:
            client.images.remove(item.name if ":" in item.name else item.image_id)
            removed += 1
            log(f"removed {line}")
        except _not_found():
            removed += 1  # gone with an image removed before it (an untagged parent)
        except Exception as exc:  # a child image still needs it, ...
            log(f"kept {item.name}: {_reason(exc)}")
    if dry_run:
        return removed, 0
    after = free_bytes(client)
    return removed, (None if before is None or after is None else max(0, after - before))


# --------------------------------------------------------------------------- disk


def data_root(client: Any) -> str | None:
    """The engine's data root (``docker info``: DockerRootDir) when the engine is local (its root
    is a folder here and DOCKER_HOST is a unix socket or unset), else None."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return None
    try:
        root = client.info().get("DockerRootDir")
    except Exception:
        return None
    return root if root and os.path.isdir(root) else None


def free_bytes(client: Any) -> int | None:
    """Free bytes (for an unprivileged writer's share too: f_bavail) on the engine's data root;
    None when the engine is not local."""
    root = data_root(client)
    if root is None:
        return None
    stat = os.statvfs(root)
    return stat.f_bavail * stat.f_frsize

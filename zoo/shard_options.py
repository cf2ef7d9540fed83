"""The --shards options checked before any work, with neither data nor Ray (check_options, called by
zoo.stages.config.check_config): --cluster is one of the forms the zoo supports (Ray would import the
module named before any other `scheme://`), ZOO_CLUSTER_TIMEOUT is a positive number of seconds,
--devices are ASCII device numbers and only with a device resource (a CPU shard opens no device, and
the record would claim them), --shards at most the samples of --limit. zoo.shard, which runs the
shards, reads the same definitions (cluster_problem, cluster_timeout, shard_resource). Standard
library only at import, like zoo.stages.config."""
from __future__ import annotations

import os
import re

from zoo.errors import ZooError

CLUSTER_FORMS = "local, auto, ray://HOST:PORT or HOST:PORT"
ADDRESS = re.compile(r"(?P<scheme>ray://)?(?P<host>[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")
CLUSTER_TIMEOUT_ENV = "ZOO_CLUSTER_TIMEOUT"  # seconds a join may take (the TCP check, then Ray's one attempt)
CLUSTER_TIMEOUT_S = 30.0


def cluster_problem(text: str | None, what: str = "--cluster") -> str | None:
    """Why `text` is not a cluster the zoo supports (None: it is one). Checked before Ray is
    imported: Ray treats `scheme://...` as a module to import (`this://x` ran `import this`)."""
    if text is None or text in ("local", "auto"):
        return None
    m = ADDRESS.fullmatch(text)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        return f"{what} must be {CLUSTER_FORMS} (a port 1-65535), got {text!r}"
    return None


def cluster_timeout() -> float:
    """ZOO_CLUSTER_TIMEOUT (seconds, > 0), else CLUSTER_TIMEOUT_S."""
    text = os.environ.get(CLUSTER_TIMEOUT_ENV)
    if text is None:
        return CLUSTER_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ZooError(f"{CLUSTER_TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def shard_resource(cfg, runtime_cls) -> str | None:
    """The Ray resource one shard takes a unit of: --shard-resource, else the runtime's accelerator
    (NPU, GPU), else None (CPU slots only)."""
    if cfg.shard_resource:
        return cfg.shard_resource
    return getattr(runtime_cls, "accelerator", None)


def check_options(cfg, runtime_cls) -> None:
    """The --shards options that need neither data nor Ray, before any work (check_config)."""
    if not getattr(cfg, "shards", None):
        return
    problem = cluster_problem(cfg.cluster)
    if problem:
        raise ZooError(problem)
    if cfg.cluster not in (None, "local"):
        cluster_timeout()  # ZOO_CLUSTER_TIMEOUT, read now rather than at stage 6
    if cfg.devices is not None:
        ids = [d.strip() for d in cfg.devices.split(",")]
        if not all(d.isascii() and d.isdigit() for d in ids):  # str.isdigit() accepts '٣', '²'
            raise ZooError(f"--devices must be device numbers in ASCII digits (0-9), got {cfg.devices!r}")
        if shard_resource(cfg, runtime_cls) is None:
            raise ZooError(f"--devices {cfg.devices}: {cfg.runtime} shards run on CPU slots and open no device "
                           f"(--devices needs a device runtime, or --shard-resource NAME to place shards by it)")
    if cfg.limit is not None and cfg.shards > cfg.limit:
        raise ZooError(f"--shards {cfg.shards}: more shards than the {cfg.limit} sample(s) of --limit {cfg.limit}")

"""One run split over several workers with Ray (`--shards N`): the dataset source is cut into N
contiguous shards (zoo.datasets.base.Source.shard: every id in exactly one, the shards in index
order give back the source's order); each shard runs in a Ray actor that holds the compiled model,
placed by Ray on a device (a unit of the `NPU` or `GPU` resource, the device made visible to that
actor only) or on CPU slots (the threads split so that shards do not oversubscribe the cores).

Exactness: a worker does not compute figures. For every sample it computes the metrics'
*contributions* (zoo.metrics: a per-image confusion matrix, intersection and union counts, a COCO
image's detections); the driver replays them into the metrics in the source's id order, shard after
shard. A single-process run performs the same `add` calls in the same order, so an N-shard run's
accuracy equals the single-process run's to the last digit, including order-dependent figures
(running averages, batch groups).

Faults: a worker that dies (killed, out of memory) makes its call fail with a Ray actor error; Ray
restarts the actor (`max_restarts`), the driver calls the shard again and keeps only the result of
the attempt that completes, so nothing is counted twice; the record lists every retry with Ray's
reason. A shard that keeps failing fails the run (one line, no result). An error of the run itself
(a corrupt image, NaN outputs) is not retried: it fails the run with the worker's message.

Ray is imported here only, and this module only by a run with --shards: single-process runs never
import Ray. Scheduling is Ray's: the zoo only says what one shard needs.

Options are checked before any work (zoo.shard_options.check_options, from check_config): --cluster
is one of the forms the zoo supports (Ray would import the module named before any other
`scheme://`), --devices are ASCII device numbers and only with a device resource (a CPU shard opens
no device, and the record would claim them), --shards at most the samples. Joining a cluster is bounded
(ZOO_CLUSTER_TIMEOUT seconds, default 30): the address must accept a TCP connection first, and
Ray's own join is given one attempt of that length (Ray retries for about 14 minutes by default).
Ray's SIGTERM handler (sys.exit) is replaced by the zoo's again after ray.init, so a terminated
sharded run stops like a single-process one (one line, 143)."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import socket
import time
import warnings
from dataclasses import dataclass

from zoo.errors import ZooError, one_line
from zoo.paths import ROOT
from zoo.shard_options import ADDRESS, CLUSTER_TIMEOUT_ENV, cluster_problem, cluster_timeout, shard_resource
from zoo.stages import log

# Ray's accelerator resources -> (the runtime's visibility variable, the zoo's device-number variable
# that the runtime opens: zoo/runtimes/ascend_rt.py, onnxruntime_rt.py)
VISIBILITY = {"NPU": ("ASCEND_RT_VISIBLE_DEVICES", "ZOO_ASCEND_DEVICE"),
              "GPU": ("CUDA_VISIBLE_DEVICES", "ZOO_CUDA_DEVICE")}
# the driver's variables a worker needs (the job's runtime_env passes them on)
PASSED_ENV = ("ZOO_CACHE", "ZOO_MODEL_DIRS", "ZOO_ASCEND_DEVICE", "ZOO_CUDA_DEVICE", "PIP_CONFIG_FILE")
FAULT_ENV = "ZOO_SHARD_FAULT"  # fault injection for the tests (first attempt only): "kill:<shard>:<after samples>"
# (the worker SIGKILLs itself) or "oom:<shard>:<after samples>:<MiB>" (it fills that much memory and
# waits for Ray's memory monitor, set by the test below its usage, to kill it)
OOM_WAIT_S = 120


def check_reachable(address: str, what: str = "--cluster") -> None:
    """A one-line ZooError unless HOST:PORT of `address` (ray:// or not) accepts a TCP connection
    within cluster_timeout(): nothing listening fails here, at once, instead of in Ray's retries.
    Bounds Ray's own join to one attempt of that length (Ray reads these settings when imported:
    call this first; a value the user set is kept)."""
    timeout = cluster_timeout()
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")  # the driver's GCS connect attempts
    os.environ.setdefault("RAY_py_gcs_connect_timeout_s", str(max(1, round(timeout))))
    m = ADDRESS.fullmatch(address)
    if m is None:  # auto without RAY_ADDRESS: the cluster Ray finds here, joined within the bound
        return
    try:
        socket.create_connection((m["host"], int(m["port"])), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or one_line(exc))
        hint = " (is the head's Ray Client server up?)" if m["scheme"] else ""
        raise ZooError(f"{what} {address}: cannot start or join the Ray cluster: nothing answers at "
                       f"{m['host']}:{m['port']} ({reason}; {CLUSTER_TIMEOUT_ENV}={timeout:g} s){hint}") from None


def check_count(cfg, source) -> None:
    """--shards against the samples, as soon as the dataset is open (before weights, export, Ray)."""
    if getattr(cfg, "shards", None) and cfg.shards > len(source):
        raise ZooError(f"--shards {cfg.shards}: only {len(source)} sample(s) to split")


def device_list(text: str | None) -> list[str] | None:
    return [d.strip() for d in text.split(",")] if text else None


def visibility_env(resource: str | None, ray_ids: list[str], devices: list[str] | None) -> dict[str, str]:
    """The environment that makes an actor's devices, and only those, visible to its runtime.
    `ray_ids`: the ids Ray assigned this actor of `resource` on its node (0..k-1 of the node's
    units); `devices`: --devices, mapping Ray's k-th unit to device number devices[k] (None: Ray's
    ids are the device numbers). The runtime then opens device 0 of what it sees. Empty for CPU
    shards and for resources the zoo knows no visibility variable of."""
    if resource not in VISIBILITY or not ray_ids:
        return {}
    physical = []
    for rid in ray_ids:
        k = int(rid)
        if devices is not None:
            if k >= len(devices):
                raise ZooError(f"Ray assigned {resource} unit {k}, but --devices lists only {len(devices)} "
                               f"device(s): {','.join(devices)}")
            physical.append(devices[k])
        else:
            physical.append(str(k))
    visible, opened = VISIBILITY[resource]
    return {visible: ",".join(physical), opened: "0"}


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


# --------------------------------------------------------------------------- the worker (a Ray actor)

class _ReportProgress:
    """run_pipeline's progress object in a worker: the shard's count of samples done goes to the
    driver's tally (at most once a second, and at the end); the fault hook of the tests lives here."""

    def __init__(self, tally, index: int, total: int, kill_after: int | None, fill_mib: int = 0):
        self.tally, self.index, self.total, self.kill_after, self.fill_mib = tally, index, total, kill_after, fill_mib
        self.last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        if self.kill_after is not None and done >= self.kill_after:
            if not self.fill_mib:
                os.kill(os.getpid(), signal.SIGKILL)  # a worker killed mid-shard (the tests' fault)
            import numpy as np
            held = np.ones(self.fill_mib << 20, dtype=np.uint8)  # every page touched: resident
            time.sleep(OOM_WAIT_S)  # Ray's memory monitor kills this process meanwhile
            raise RuntimeError(f"{FAULT_ENV}: holding {held.nbytes >> 20} MiB, this worker was not killed by Ray's "
                               f"memory monitor within {OOM_WAIT_S} s (is RAY_memory_usage_threshold below it?)")
        now = time.monotonic()
        if self.tally is not None and (force or done >= self.total or now - self.last >= 1.0):
            self.last = now
            self.tally.report.remote(self.index, done)


class ShardWorker:
    """One shard's worker: its environment (device visibility), its slice of the source, the
    compiled model (from the cache the driver filled), and the two measurements of a batch size."""

    def __init__(self, cfg_json: str, export: dict, index: int, count: int, resource: str | None,
                 devices: list[str] | None, tally: str | None = None, fault: str | None = None):
        import ray

        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray 2.60 warns about its own property's implementation
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = bool(ctx.was_current_actor_reconstructed)
        ray_ids = [str(i) for i in ctx.get_accelerator_ids().get(resource, [])] if resource else []
        self.env = visibility_env(resource, ray_ids, devices)
        os.environ.update(self.env)  # before any runtime opens a device

        from zoo.datasets import open_source
        from zoo.paths import cache_dir
        from zoo.stages.compile import calibration_for, compile_runtime
        from zoo.stages.config import check_config, from_json
        from zoo.stages.weights import load_model

        cfg = from_json(cfg_json)
        manifest, runtime_cls, adapter = check_config(cfg)
        cache = cache_dir()
        self.cfg, self.manifest, self.adapter, self.index, self.count = cfg, manifest, adapter, index, count
        self.source = open_source(manifest, cfg.data, cfg.ids_file, cfg.limit, cache).shard(index, count)
        module = None if runtime_cls.runs_onnx_graph else load_model(cfg, manifest, adapter)[1]
        calibration = calibration_for(cfg, runtime_cls, manifest, adapter, cache)
        self.rt = compile_runtime(cfg, runtime_cls, manifest, export, module, cache, calibration)
        self.tally = ray.get_actor(tally) if tally else None  # by name: no handle among the arguments
        self.ray_ids = ray_ids
        self.kill_after, self.fill_mib = None, 0
        if fault and not self.restarted:
            kind, shard, after, *mib = fault.split(":")
            if kind in ("kill", "oom") and int(shard) == index:
                self.kill_after = int(after)
                self.fill_mib = int(mib[0]) if kind == "oom" else 0
        self.node = {"node_id": ctx.get_node_id(), "address": ray.util.get_node_ip_address()}

    def placement(self) -> dict:
        ids = self.source.ids
        return {"index": self.index, "num_samples": len(ids), "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None, "ids_sha256": ids_digest(ids),
                "node_id": self.node["node_id"], "node_address": self.node["address"], "pid": os.getpid(),
                "threads": self.rt.threads, "ray_ids": self.ray_ids, "environment": self.env,
                "precision": self.rt.executed_precision()}

    def infer_only(self, bs: int) -> dict:
        from zoo.pipeline import infer_only
        from zoo.stages.infer import infer_feed
        cfg, inp = self.cfg, self.manifest.input["name"]
        head = [self.adapter.preprocess(self.source.read(i))[0] for i in self.source.ids[:bs]]
        feed, desc = infer_feed(cfg.infer_input, head, bs)
        return infer_only(self.rt, {inp: feed}, bs, cfg.warmup, cfg.iterations, cfg.time_budget, desc,
                          cfg.stability, keep_latencies=True)

    def pipeline(self, bs: int) -> tuple[dict, list[list]]:
        """The streaming pipeline over the shard: (perf block with its batch latencies, every
        metric's contributions in the shard's id order)."""
        from zoo.metrics import Collector
        from zoo.pipeline import run_pipeline
        cfg, m = self.cfg, self.manifest
        collectors = [Collector(metric) for metric in self.adapter.metrics(self.source)]
        progress = _ReportProgress(self.tally, self.index, len(self.source), self.kill_after, self.fill_mib)
        block = run_pipeline(self.rt, self.source, self.adapter, bs, m.input["name"], m.output["name"], collectors,
                             workers=cfg.workers, label=f"{cfg.runtime} shard {self.index}",
                             post_workers=cfg.post_workers, progress=progress, keep_latencies=True,
                             tolerance=cfg.interval_tolerance)
        return block, [c.contributions for c in collectors]

    def close(self) -> None:
        self.rt.close()


class Tally:
    """The driver's progress board (a Ray actor): each shard's samples done in its current attempt."""

    def __init__(self):
        self.done: dict[int, int] = {}

    def report(self, index: int, done: int) -> None:
        self.done[index] = done

    def reset(self, index: int) -> None:
        self.done[index] = 0

    def snapshot(self) -> dict[int, int]:
        return dict(self.done)


# --------------------------------------------------------------------------- the driver

@dataclass
class Cluster:
    """The Ray cluster a sharded run uses: local (started by this run), auto or an address."""
    mode: str
    address: str | None
    join_attempts: int = 1

    def describe(self) -> dict:
        import ray
        nodes = [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                  "resources": {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")
                                and k not in ("memory", "object_store_memory")}}
                 for n in ray.nodes() if n.get("Alive")]
        return {"mode": self.mode, "address": self.address, "ray_version": ray.__version__, "nodes": nodes,
                "join_attempts": self.join_attempts}


def connect(cluster: str | None, resource: str | None, devices: list[str] | None, cpus: int) -> Cluster:
    """Start a local cluster (--cluster local, the default; with --devices it has that many units
    of the shard resource) or join one (auto: RAY_ADDRESS or a running cluster; an address)."""
    mode = cluster or "local"
    if mode != "local":
        problem = cluster_problem(os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS") if mode == "auto" else None
        if problem:
            raise ZooError(f"--cluster auto: {problem}")
        check_reachable(mode if mode != "auto" else os.environ.get("RAY_ADDRESS", ""))  # before Ray is imported
        use_cluster_token()  # before Ray reads its configuration
    try:
        import ray
    except ImportError:
        raise ZooError("--shards needs Ray in this environment (pinned in every model's lock: invoke setup)") from None
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           **{k: os.environ[k] for k in PASSED_ENV if k in os.environ}}
    runtime_env = {"env_vars": env}
    # Ray probes for Ascend NPUs by importing `acl` and logs a traceback where there is none
    logging.getLogger("ray._private.accelerators.npu").setLevel(logging.CRITICAL)
    zoo_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit(15): Ray's crash dump, exit 1
    try:
        if mode == "local":
            resources = {resource: float(len(devices))} if resource and devices else None
            ray.init(address="local", num_cpus=cpus, resources=resources, include_dashboard=False,
                     runtime_env=runtime_env,  # "local": a new cluster, never one left in /tmp/ray
                     logging_level="WARNING", log_to_driver=True, configure_logging=True)
            return Cluster("local", None)
        address = None if mode == "auto" else mode
        attempts = join(ray, mode, address=address or "auto", runtime_env=runtime_env, logging_level="WARNING",
                        log_to_driver=True)
        return Cluster("auto" if address is None else "address", address or os.environ.get("RAY_ADDRESS"),
                       join_attempts=attempts)
    except ZooError:
        raise
    except Exception as exc:  # no cluster at the address, a version mismatch, ...
        hint = ""
        if mode.startswith("ray://") and "timeout" in str(exc):
            hint = (" (is the head's Ray Client server up? `ray start --head --ray-client-server-port PORT "
                    "--runtime-env-agent-port FIXED`: Ray 2.60's client proxy fails with the default agent port 0)")
        raise ZooError(f"--cluster {mode}: cannot start or join the Ray cluster: {ray_message(exc)[:300]}{hint}") from None
    finally:
        _restore_sigterm(zoo_sigterm)


def _restore_sigterm(handler) -> None:
    """The zoo's SIGTERM handler again (zoo.cli: one line, 143), where ray.init replaced it."""
    import threading
    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGTERM, handler)


# Ray Client (ray://) gives each driver its own server process on the head, started by the head's
# client proxy. In Ray 2.60 that process occasionally dies at start-up with an empty log (about 1 join
# in 25 on this machine); the next join starts a new one. Only that failure is retried.
JOIN_ATTEMPTS = 3
TRANSIENT_JOIN = "the head's Ray Client proxy could not start this driver's server"
_TRANSIENT_MARKERS = ("Starting Ray client server failed", "Proxy failed to Connect to backend")
# The same death seen from inside the proxy: the server exits between the proxy's poll() and its
# psutil cmdline() read, and the proxy's start_specific_server raises (psutil.NoSuchProcess or
# ZombieProcess) instead of returning False. The client then gets the proxy's traceback.
_TRANSIENT_FRAME = "start_specific_server("


def _transient_join_failure(exc: BaseException) -> bool:
    text = str(exc)
    return any(m in text for m in _TRANSIENT_MARKERS) or _TRANSIENT_FRAME in text


def ray_message(exc: BaseException) -> str:
    """One line for a Ray error. A server-side traceback sent to the client is cut to the text before
    it and the traceback's last line (the exception itself), not its first frames."""
    text = str(exc)
    head, sep, trace = text.partition("Traceback (most recent call last):")
    if sep:
        lines = [ln.strip() for ln in trace.splitlines() if ln.strip()]
        text = f"{head.strip()} {lines[-1] if lines else ''}".strip()
    return one_line(RuntimeError(text)) if text else one_line(exc)


def join(ray, label: str, **init_kw) -> int:
    """ray.init(**init_kw) joining an existing cluster, again (up to JOIN_ATTEMPTS in all) when Ray
    Client's per-driver server failed to start; any other failure is raised at once. Returns the
    number of attempts it took (the record keeps it)."""
    for attempt in range(1, JOIN_ATTEMPTS):
        try:
            ray.init(**init_kw)
            return attempt
        except Exception as exc:
            if not _transient_join_failure(exc):
                raise
            ray.shutdown()
            log(f"      --cluster {label}: {TRANSIENT_JOIN} (attempt {attempt}/{JOIN_ATTEMPTS}); joining again")
            time.sleep(attempt)
    ray.init(**init_kw)  # the last attempt: whatever fails now is raised
    return JOIN_ATTEMPTS


def use_cluster_token() -> None:
    """Ray 2.60 clusters started with `ray start` require a token (written to ~/.ray/auth_token), and
    a driver sends it only in token mode (RAY_AUTH_MODE=token). Joining a cluster (auto, an address,
    ray://) uses the token this user has, if any: the one `ray` commands on this machine use."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    have = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        os.path.isfile(os.path.expanduser("~/.ray/auth_token"))
    if have:
        os.environ["RAY_AUTH_MODE"] = "token"


def _threads(cfg, resource: str | None, shards: int) -> int:
    """Intra-op threads of one shard: --threads, else the cluster's CPUs split over the shards."""
    import ray
    if cfg.threads:
        return cfg.threads
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, cpus // shards)


def _check_capacity(resource: str | None, shards: int, threads: int) -> None:
    """All shards at once or a one-line error (never a run that waits for resources forever)."""
    import ray
    have = ray.cluster_resources()
    if resource and have.get(resource, 0) < shards:
        raise ZooError(f"--shards {shards}: the cluster has {have.get(resource, 0):g} {resource} unit(s); each shard "
                       f"takes one ({resource} resources: ray start --resources, or --devices with --cluster local)")
    if have.get("CPU", 0) < shards * threads:
        raise ZooError(f"--shards {shards} x {threads} thread(s) need {shards * threads} CPUs; the cluster has "
                       f"{have.get('CPU', 0):g} (--threads sets a shard's threads)")


class _Driver:
    """The driver's side of sharded work: one actor per (shard index, shard count) in `shards`,
    their calls with retries, progress. `threads`: each actor's intra-op threads (and CPU slots)."""

    def __init__(self, cfg, export: dict, resource: str | None, devices: list[str] | None, threads: int,
                 shards: list[tuple[int, int]], fault: str | None = None):
        import ray

        from zoo.stages.config import to_json
        self.cfg, self.resource = cfg, resource
        self.count = len(shards)
        self.retries: list[dict] = []
        cfg_json = to_json(dataclasses.replace(cfg, threads=threads))
        tally = f"zoo-tally-{os.getpid()}-{time.time_ns()}"
        # progress only: restarted (empty) when Ray kills it, e.g. its memory monitor; never fails the run
        self.tally = ray.remote(Tally).options(num_cpus=0, name=tally, max_restarts=-1).remote()
        options = {"num_cpus": threads, "max_restarts": cfg.shard_retries, "max_task_retries": 0}
        if resource:
            options["resources"] = {resource: 1}
        worker = ray.remote(ShardWorker).options(**options)
        export = {k: export[k] for k in ("path", "onnx_sha256")}  # what compile needs: small arguments stay
        # inline in the actor's creation task, so a restarted actor never misses them in the object store
        self.actors = [worker.remote(cfg_json, export, index, count, resource, devices, tally, fault)
                       for index, count in shards]
        self.index = [index for index, _ in shards]

    def call(self, method: str, *args, label: str, total: int | None = None) -> list:
        """`method(*args)` on every actor at once; the results in shard order. A died worker's
        call is made again (Ray restarts the actor) up to --shard-retries times. Its progress
        (zoo.logs): the samples the shards have done (`total`, from the tally), else the shards done."""
        from zoo import logs
        with logs.progress("      starting the shards" if label == "start" else f"      {label}", total or self.count,
                           "samples" if total else "shards") as bar:
            return self._call(method, args, label, total, bar)

    def _call(self, method: str, args: tuple, label: str, total: int | None, bar) -> list:
        import ray
        from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError
        died = (RayActorError, OutOfMemoryError)  # killed or crashed (ActorUnavailableError is a RayActorError),
        # or killed by Ray's memory monitor (OutOfMemoryError: the call fails while Ray restarts the actor)
        pending = {getattr(a, method).remote(*args): i for i, a in enumerate(self.actors)}
        attempts, results = [0] * self.count, [None] * self.count
        last = time.monotonic()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except RayTaskError as exc:  # the run's own error in the worker: not retried
                    cause = getattr(exc, "cause", None) or exc
                    raise ZooError(f"shard {self.index[i]}: {one_line(cause)[:400]}") from None
                except died as exc:
                    attempts[i] += 1
                    reason = one_line(exc)[:400]
                    if attempts[i] > self.cfg.shard_retries:
                        raise ZooError(f"shard {self.index[i]}: its worker died {attempts[i]} times "
                                       f"({label}); last: {reason}") from None
                    self.retries.append({"shard": self.index[i], "call": label, "attempt": attempts[i] + 1, "reason": reason})
                    log(f"      shard {self.index[i]}: worker died during {label}; running the shard again "
                        f"(attempt {attempts[i] + 1} of {self.cfg.shard_retries + 1})")
                    self.tally.reset.remote(i)
                    pending[getattr(self.actors[i], method).remote(*args)] = i
            if not total:
                bar.update(self.count - len(pending))
            now = time.monotonic()
            if total and now - last >= 2.0 and pending:
                last = now
                try:
                    done = sum(ray.get(self.tally.snapshot.remote(), timeout=10).values())
                except Exception:  # the progress actor is being restarted: no count this time
                    continue
                bar.update(min(done, total), description=f"      {label} ({self.count - len(pending)}/{self.count} "
                                                         "shards done)")
        return results

    def close(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def _pooled(values: list[list[float]]):
    from zoo.stats import summarize
    return summarize([v for vs in values for v in vs])


def per_sample(latency_ms: dict, bs: int) -> dict:
    from zoo.stats import per_sample as of
    return of(latency_ms, bs)


def _summed(blocks: list[dict], figure: float) -> dict:
    from zoo.stats import summed_interval
    return summed_interval([b["interval"] for b in blocks], [b["throughput"] for b in blocks], figure,
                           blocks[0]["interval"]["tolerance"])


def aggregate_infer(blocks: list[dict], bs: int) -> dict:
    """The shards' concurrent infer-only timings as one block: their throughputs added (they ran at
    the same time), every timed call's latency pooled."""
    n = sum(b["num_samples"] for b in blocks)
    block = {"batch_size": bs, "scope": "infer_only", "status": "ok", "error": None,
             "input": blocks[0]["input"] + f"; {len(blocks)} shards timed at once, throughputs added",
             "warmup": blocks[0]["warmup"], "iterations": sum(b["iterations"] for b in blocks),
             "stopped_by": max(blocks, key=lambda b: b["wall_s"])["stopped_by"],  # the last shard to stop
             "num_samples": n, "wall_s": max(b["wall_s"] for b in blocks),
             "throughput": sum(b["throughput"] for b in blocks),
             "latency_ms": _pooled([b["latencies_ms"] for b in blocks]),
             "interval": _summed(blocks, sum(b["throughput"] for b in blocks)),
             "cpu_s_per_sample": sum(b["cpu_s_per_sample"] * b["num_samples"] for b in blocks) / n,
             "shards": [{"index": i, "num_samples": b["num_samples"], "wall_s": b["wall_s"],
                        "throughput": b["throughput"]} for i, b in enumerate(blocks)]}
    block["latency_per_sample_ms"] = per_sample(block["latency_ms"], bs)
    return block


def aggregate_pipeline(blocks: list[dict], bs: int, wall: float) -> dict:
    """The shards' pipelines as one block: every sample over the wall time of the whole parallel
    phase (the driver's clock, from the calls to the last shard's end, retries included), stage and
    CPU times added, batch latencies pooled; `shards` keeps each shard's own figures."""
    n = sum(b["num_samples"] for b in blocks)
    totals = {k: sum(b["stages"][k]["total_s"] for b in blocks) for k in blocks[0]["stages"]}
    all_s = sum(totals.values()) or 1.0
    stages = {k: {"total_s": v, "share": v / all_s, "throughput": n / v if v else 0.0} for k, v in totals.items()}
    cpu_stages = {k: sum(b["cpu"]["stages_s"][k] for b in blocks) for k in blocks[0]["cpu"]["stages_s"]}
    block = {"batch_size": bs, "scope": "pipeline", "status": "ok", "error": None, "stopped_by": "dataset_end",
             "num_samples": n, "wall_s": wall, "throughput": n / wall if wall else 0.0,
             "latency_ms": _pooled([b["latencies_ms"] for b in blocks]), "stages": stages,
             "interval": _summed(blocks, n / wall if wall else 0.0),
             "workers": blocks[0]["workers"], "postprocess_workers": blocks[0]["postprocess_workers"],
             "cpu": {"process_s": sum(b["cpu"]["process_s"] for b in blocks), "stages_s": cpu_stages},
             "shards": [{"index": i, "num_samples": b["num_samples"], "wall_s": b["wall_s"],
                        "throughput": b["throughput"]} for i, b in enumerate(blocks)]}
    block["latency_per_sample_ms"] = per_sample(block["latency_ms"], bs)
    return block


def merge_metrics(metrics: list, per_shard: list[list[list]]) -> list:
    """Replay every shard's contributions (shard order, then the shard's id order) into `metrics`."""
    from zoo.metrics import replay
    for shard in per_shard:
        for metric, contributions in zip(metrics, shard):
            replay(metric, contributions)
    return metrics


def sharded_sweep(cfg, runtime_cls, manifest, adapter, source, export: dict,
                  batch_sizes: list[int]) -> tuple[list[dict], dict, dict]:
    """Stage 6 over --shards workers: (perf blocks, {batch size: merged metrics}, the record's
    `sharding` block)."""
    from zoo.runtimes.base import default_threads
    from zoo.stages.infer import Peak, _with_cost
    resource = shard_resource(cfg, runtime_cls)
    devices = device_list(cfg.devices)
    check_count(cfg, source)  # zoo.run checked it already; sharded_sweep may be called on its own
    cluster = connect(cfg.cluster, resource, devices, default_threads())  # imports Ray first
    import ray
    driver = None
    try:
        threads = _threads(cfg, resource, cfg.shards)
        _check_capacity(resource, cfg.shards, threads)
        log(f"      {cfg.shards} shards on Ray {ray.__version__} ({cluster.mode}), {threads} thread(s) each"
            + (f", one {resource} each" if resource else ""))
        t0 = time.monotonic()
        driver = _Driver(cfg, export, resource, devices, threads, [(i, cfg.shards) for i in range(cfg.shards)],
                         os.environ.get(FAULT_ENV))
        placements = driver.call("placement", label="start")
        startup = time.monotonic() - t0
        for p in placements:
            log(f"      shard {p['index']}: {p['num_samples']} samples on {p['node_address']} pid {p['pid']}"
                + (f", {p['environment']}" if p["environment"] else ""))
        cost, peak = export.get("cost", {}), Peak(threads, False)
        perf, metrics_by_bs = [], {}
        for bs in batch_sizes:
            infer_blocks = driver.call("infer_only", bs, label=f"bs{bs} infer_only")
            infer = aggregate_infer(infer_blocks, bs)
            perf.append(_with_cost(infer, cost, None, peak))
            t = time.monotonic()
            results = driver.call("pipeline", bs, label=f"bs{bs} pipeline", total=len(source))
            pipe = aggregate_pipeline([r[0] for r in results], bs, time.monotonic() - t)
            pipe["pipeline_vs_infer"] = pipe["throughput"] / infer["throughput"]
            perf.append(_with_cost(pipe, cost, None, peak))
            metrics_by_bs[bs] = merge_metrics(adapter.metrics(source), [r[1] for r in results])
            log(f"      bs{bs}: {cfg.shards} shards, infer {infer['throughput']:.1f}/s, pipeline "
                f"{pipe['throughput']:.1f}/s (" + ", ".join(f"{s['throughput']:.1f}" for s in pipe["shards"])
                + " per shard), " + ", ".join(f"{m.name} {m.metric}={m.compute()[m.metric]:.4f}"
                                              for m in metrics_by_bs[bs]))
        driver.close()
        scaling = None
        if cfg.scaling_reference:
            scaling = _scaling(cfg, export, resource, devices, threads, batch_sizes[0], perf)
        retried = {r["shard"] for r in driver.retries}
        for p in placements:
            p["retried"] = p["index"] in retried
        block = {"count": cfg.shards, "cluster": cluster.describe(), "resource": resource or "CPU",
                 "devices": devices, "threads_per_shard": threads, "startup_s": startup, "shards": placements,
                 "retries": driver.retries, "scaling": scaling,
                 "merge": "per-sample metric contributions replayed in the source's id order (zoo.shard)"}
        return perf, metrics_by_bs, block
    except KeyboardInterrupt:
        log("      interrupted: stopping the shards")
        raise
    finally:
        if driver is not None:
            driver.close()
        ray.shutdown()  # stops a local cluster this run started; from a joined one it only disconnects


def _scaling(cfg, export: dict, resource: str | None, devices, threads: int, bs: int, perf: list[dict]) -> dict:
    """The one-shard reference: shard 0's samples through one actor that has every thread of the
    sharded run (CPU) or one device, at the first batch size; efficiency = the sharded aggregate
    over the ideal (the reference's throughput times the compute units the shards had over the
    reference's: devices for accelerators, threads on CPU)."""
    ref_threads = threads if resource else threads * cfg.shards
    log(f"      scaling reference: shard 0 of {cfg.shards} on one actor ({ref_threads} threads"
        + (f", one {resource}" if resource else "") + f"), bs{bs}")
    ref = _Driver(cfg, export, resource, devices, ref_threads, [(0, cfg.shards)])
    try:  # the same sequence as the shards': the infer-only timing (warm-up included), then the pipeline
        infer = ref.call("infer_only", bs, label=f"reference bs{bs} infer_only")[0]
        block, _ = ref.call("pipeline", bs, label=f"reference bs{bs}")[0]
    finally:
        ref.close()
    agg = next(p for p in perf if p["scope"] == "pipeline" and p["batch_size"] == bs)
    units = (cfg.shards, 1) if resource else (cfg.shards * threads, ref_threads)
    ideal = block["throughput"] * units[0] / units[1]
    return {"batch_size": bs, "reference": {"shard": 0, "num_samples": block["num_samples"], "threads": ref_threads,
                                            "devices": 1 if resource else 0, "throughput": block["throughput"],
                                            "infer_throughput": infer["throughput"]},
            "aggregate_throughput": agg["throughput"], "ideal_throughput": ideal,
            "efficiency": agg["throughput"] / ideal if ideal else None,
            "units": f"{units[0]} vs {units[1]} {'devices' if resource else 'threads'}"}


__all__ = ["use_cluster_token", "ShardWorker", "Tally", "aggregate_infer", "aggregate_pipeline", "connect", "merge_metrics",
           "sharded_sweep", "shard_resource", "visibility_env", "ids_digest"]

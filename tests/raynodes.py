"""A Ray cluster of several nodes on this machine, for tests and benchmarks (host-safe: standard
library only; the `ray` command of the given environment does the work)."""
from __future__ import annotations


class RayNodes:
    """A Ray cluster of several nodes on this machine for tests and benchmarks: `ray start --head
    --block` and `ray start --address --block` child processes (each node its --num-cpus and
    custom resources), stopped by terminating them (never `ray stop`, which stops every Ray
    process of the machine). `address` is the GCS address, `client` the Ray Client address. `env`:
    variables set for the nodes' processes (over this process's environment)."""

    def __init__(self, ray_cli: str, nodes: list[dict], timeout: float = 180, env: dict | None = None):
        self.ray_cli, self.nodes, self.timeout, self.env = ray_cli, nodes, timeout, dict(env or {})
        self.procs: list = []
        port, client, agent = (_free_port() for _ in range(3))
        self.address, self.client = f"127.0.0.1:{port}", f"ray://127.0.0.1:{client}"
        self._head = [f"--port={port}", f"--ray-client-server-port={client}", f"--runtime-env-agent-port={agent}"]

    def _start(self, extra: list[str], node: dict) -> None:
        import json
        import os
        import subprocess
        argv = [self.ray_cli, "start", "--block", "--disable-usage-stats", f"--num-cpus={node.get('cpus', 1)}",
                f"--resources={json.dumps(node.get('resources', {}))}", *extra]
        env = {**os.environ, **self.env, "RAY_AUTH_MODE": "token"}  # the head makes a token; nodes must send it
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                           start_new_session=True))

    def __enter__(self) -> "RayNodes":
        import time
        try:
            self._start(["--head", "--include-dashboard=false", *self._head], self.nodes[0])
            self._wait(1)
            for node in self.nodes[1:]:
                self._start([f"--address={self.address}"], node)
            self._wait(len(self.nodes))
        except BaseException:
            self.__exit__()
            raise
        time.sleep(1)
        return self

    def _wait(self, count: int) -> None:
        """Until `ray status`-like polling of the GCS sees `count` alive nodes."""
        import os
        import subprocess
        import sys
        import time
        code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a `ray start` exited early: {[p.args for p in self.procs if p.poll() is not None]}")
            env = {**os.environ, "RAY_AUTH_MODE": "token"}
            proc = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True, env=env)
            if proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == [str(count)] and self._client_up():
                return
            time.sleep(2)
        raise TimeoutError(f"Ray cluster at {self.address}: {count} node(s) not up after {self.timeout} s")

    def _client_up(self) -> bool:
        """The head's Ray Client server accepts connections (it starts after the GCS)."""
        import socket
        port = int(self.client.rsplit(":", 1)[1])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        import os
        import signal
        for p in reversed(self.procs):  # a --block `ray start` stops its node's processes on SIGTERM
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=60)
            except Exception:
                os.killpg(p.pid, signal.SIGKILL)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_workers(cache) -> list[str]:
    """The command lines of the Ray shard workers still alive that a run with ZOO_CACHE=`cache` started
    (zoo.shard passes ZOO_CACHE to its actors): another test session's Ray on the same machine is not
    this run's leftover."""
    import os
    mark = f"ZOO_CACHE={cache}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if "ray::ShardWorker" not in args:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    found.append(f"{pid} {args}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found

"""A batch-size sweep that survives the process being killed: each batch size runs in its own
child process (`python -m zoo run --batch-sizes <bs>`), watched for its resident memory.

A child that raises is recorded with its one-line error; a child killed by a signal (the kernel's
OOM killer sends SIGKILL) or by the memory watchdog (`memory_limit_mb`: resident set size above
the limit -> SIGKILL) is recorded as a failed batch size with the reason, and the sweep goes on.
The children's records are merged into one result, as if one process had run the sweep (with
--save-predictions, the first batch size's predictions beside it)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from zoo.errors import ZooError


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(current, peak) resident set size of a live process in MB, from /proc (Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


@dataclasses.dataclass
class ChildOutcome:
    returncode: int
    peak_rss_mb: float | None
    killed_by_watchdog: bool
    stdout: str
    stderr_tail: list[str]

    def reason(self, memory_limit_mb: float | None) -> str:
        if self.killed_by_watchdog:
            return (f"killed: resident memory reached {self.peak_rss_mb:.0f} MB, above the memory limit of "
                    f"{memory_limit_mb:.0f} MB")
        if self.returncode < 0:
            sig = signal.Signals(-self.returncode).name
            hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == "SIGKILL" else ""
            return f"process killed by {sig}{hint}; peak resident memory {self.peak_rss_mb or 0:.0f} MB"
        errors = [ln for ln in self.stderr_tail if ln.startswith("error: ")]
        return errors[-1][len("error: "):] if errors else f"exit code {self.returncode}: {' | '.join(self.stderr_tail[-2:])}"


def watch(cmd: list[str], memory_limit_mb: float | None = None, env: dict | None = None,
          poll_s: float = 0.05) -> ChildOutcome:
    """Run `cmd`, echo its stderr, poll its resident memory; SIGKILL it above `memory_limit_mb`."""
    if memory_limit_mb is not None and not Path("/proc/self/status").exists():
        raise ZooError("--memory-limit needs /proc (Linux) to watch the resident memory")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    tail: deque = deque(maxlen=20)
    out: list[str] = []

    def pump_err():
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=pump_err, daemon=True),
               threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]
    for t in readers:
        t.start()
    peak, killed = None, False
    try:
        while proc.poll() is None:
            mem = rss_mb(proc.pid)
            if mem:
                peak = max(peak or 0.0, mem[1])
                if memory_limit_mb is not None and mem[0] > memory_limit_mb:
                    peak = max(peak, mem[0])
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    proc.wait()
                    break
            time.sleep(poll_s)
    except BaseException:  # interrupted: never leave the child running
        proc.kill()
        proc.wait()
        raise
    for t in readers:
        t.join(timeout=10)
    return ChildOutcome(proc.returncode, peak, killed, "".join(out), list(tail))


def _config_json(cfg, bs: int, out: Path, first: bool = True) -> str:
    """The child's config (zoo.stages.config.to_json): one batch size, run in the child itself,
    written into `out`. In a reduced-precision sweep only `first` children -- those started
    before any child succeeded -- run the fp32 baseline: the merged record keeps the first
    successful child's accuracy, and its baseline with it."""
    from zoo.stages.config import to_json
    return to_json(dataclasses.replace(cfg, batch_sizes=[bs], out=out, isolate=False, memory_limit_mb=None,
                                       fp32_baseline=cfg.fp32_baseline and first))


def _merge_accuracy(records: list[dict]) -> list[dict]:
    """The first batch size's accuracy blocks, with the spread across every batch size's."""
    blocks = [dict(b) for b in records[0]["accuracy"]]
    for i, b in enumerate(blocks):
        spread = max(abs(r["accuracy"][i]["value"] - b["value"]) for r in records)
        b["max_spread_across_batch_sizes"] = spread
        b["consistent_across_batch_sizes"] = spread <= 1e-4
    return blocks


def run_isolated(cfg, argv: list[str]) -> Path:
    """The sweep of `cfg.batch_sizes` (or the manifest's), one child process per batch size."""
    from zoo.manifest import load_manifest
    from zoo.stages.config import sweep_sizes
    from zoo.stages.record import run_stem
    t_start = time.time()
    manifest = load_manifest(cfg.model)
    sizes = sweep_sizes(cfg, manifest, manifest.adapter(**cfg.options))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                   os.environ.get("PYTHONPATH")]))}
    records, perf, first_dir = [], [], None
    with tempfile.TemporaryDirectory(prefix="zoo-isolate-") as tmp:
        for bs in sizes:
            out = Path(tmp) / f"bs{bs}"
            print(f"[isolate] batch size {bs} in a child process"
                  + (f" (memory limit {cfg.memory_limit_mb:.0f} MB)" if cfg.memory_limit_mb else ""),
                  file=sys.stderr, flush=True)
            res = watch([sys.executable, "-m", "zoo", "_child", "--config", _config_json(cfg, bs, out, not records)],
                        cfg.memory_limit_mb, env)
            if res.returncode == 130:  # the child was interrupted (Ctrl-C reaches the whole group)
                raise KeyboardInterrupt
            files = sorted(out.glob("*/*.json"))  # the child's own temporary results folder
            if res.returncode == 0 and files:
                rec = json.loads(files[0].read_text())
                records.append(rec)
                first_dir = first_dir or files[0].parent
                for p in rec["perf"]:
                    perf.append({**p, "peak_rss_mb": res.peak_rss_mb})
                continue
            reason = res.reason(cfg.memory_limit_mb)
            print(f"[isolate] bs{bs}: FAILED: {reason}", file=sys.stderr, flush=True)
            perf.append({"batch_size": bs, "scope": "infer_only", "status": "failed", "error": reason[:500],
                         "peak_rss_mb": res.peak_rss_mb})
        if not records:
            raise ZooError(f"{cfg.model}/{cfg.runtime}: every batch size failed; first error: {perf[0]['error']}")
        rec = _merge(records, perf, cfg, t_start, argv)
        # a new run id (<model>-<runtime>-<start>-<6 hex>) names a new file: never over another run's
        return _write(rec, Path(cfg.out) / manifest.name, first_dir, run_stem(cfg, manifest.name, t_start))


def _merge(records: list[dict], perf: list[dict], cfg, t_start: float, argv: list[str]) -> dict:
    """One record of the children's: the first one's, with every batch size's perf blocks."""
    from zoo.stages.record import utc
    rec = records[0]
    t_end = time.time()
    rec.update(perf=perf, accuracy=_merge_accuracy(records),
               timestamps={"started": utc(t_start), "finished": utc(t_end), "duration_s": round(t_end - t_start, 3)})
    rec["environment"]["command"] = [Path(sys.executable).name, "-m", "zoo", *argv]
    for field in ("fp32_peak", "precision_peak"):  # the children read one cached peak; keep the highest
        peaks = [r["device"][field] for r in records if (r["device"].get(field) or {}).get("gflops")]
        if peaks:
            rec["device"][field] = max(peaks, key=lambda pk: pk["gflops"])
    peak = rec["device"].get("precision_peak") if rec["precision"] != "fp32" else rec["device"].get("fp32_peak")
    if peak is not None or rec["device"].get("fp32_peak"):
        from zoo.peaks import apply_peak
        from zoo.stages import log
        for note in apply_peak(perf, (peak or {}).get("gflops"), rec["precision"]):
            log(f"      WARNING: {note}; no fraction recorded")
    rec["runtime"]["settings"]["isolation"] = {"process_per_batch_size": True, "memory_limit_mb": cfg.memory_limit_mb}
    return rec


def _write(rec: dict, out_dir: Path, child_dir: Path, stem: str) -> Path:
    """The merged record as a new file `<stem>-<6 hex>.json`; with --save-predictions, the first
    batch size's predictions (the record's accuracy is theirs) copied beside it under the same
    run id, and removed again if the record cannot be written."""
    from zoo.stages.record import reserve_predictions, write
    kept = rec.get("predictions")
    if not kept:
        rec["run_id"] = stem
        return write(rec, out_dir)
    run_id, folder = reserve_predictions(out_dir, stem)
    shutil.copytree(child_dir / kept["path"], folder)  # creates the folder: fails if it appeared meanwhile
    rec["predictions"] = {**kept, "path": folder.name}
    try:
        return write(rec, out_dir, run_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

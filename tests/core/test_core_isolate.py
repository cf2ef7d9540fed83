"""zoo.isolate: the child-process watchdog (real processes, real /proc memory readings, real
signals) and the reasons it records, the child's config JSON, and a short real sweep with
--save-predictions. The memory-limited sweep on a real model is in
tests/models/unetpp/test_unetpp_isolate.py."""
import json
import sys
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.isolate import rss_mb, watch, _config_json
from zoo.pipeline import Stability
from zoo.stages.config import RunConfig, check_config, from_json

PY = sys.executable


def test_watch_kills_a_process_above_the_memory_limit():
    # holds 600 MB, touched page by page, then sleeps: the watchdog must kill it well before the end
    code = "import time; b = bytearray(600 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(60)"
    res = watch([PY, "-c", code], memory_limit_mb=300)
    assert res.killed_by_watchdog and res.returncode == -9
    assert res.peak_rss_mb > 300
    reason = res.reason(300)
    assert reason.startswith("killed: resident memory reached") and "above the memory limit of 300 MB" in reason


def test_watch_leaves_a_process_under_the_limit_alone_and_reads_its_peak():
    code = "import sys, time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5); print('done')"
    res = watch([PY, "-c", code], memory_limit_mb=2000)
    assert res.returncode == 0 and not res.killed_by_watchdog
    assert res.stdout.strip() == "done"
    assert 200 <= res.peak_rss_mb < 2000


def test_a_process_killed_by_sigkill_is_reported_as_a_possible_oom_kill():
    res = watch([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert res.returncode == -9 and not res.killed_by_watchdog
    assert res.reason(None).startswith("process killed by SIGKILL (out of memory?")


def test_an_error_exit_reports_the_childs_one_line_error():
    code = "import sys; print('progress', file=sys.stderr); print('error: x.png: corrupt image', file=sys.stderr); sys.exit(2)"
    res = watch([PY, "-c", code])
    assert res.returncode == 2
    assert res.reason(None) == "x.png: corrupt image"


def test_rss_of_a_missing_process_is_none():
    assert rss_mb(2 ** 22 + 12345) is None


def test_config_round_trips_through_json(tmp_path):
    cfg = RunConfig(model="unetpp", batch_sizes=[1, 4], data=tmp_path, stable_window=4, stable_tolerance=0.1,
                    options={"upsample": "nearest"}, isolate=True, memory_limit_mb=500.0, time_budget=2.5,
                    save_predictions=True, measure_peak=False, profile=3)
    back = from_json(_config_json(cfg, 4, tmp_path / "o"))
    assert back.batch_sizes == [4] and back.out == tmp_path / "o" and back.data == tmp_path
    assert back.isolate is False and back.memory_limit_mb is None  # the child runs its one batch size itself
    assert back.stability == Stability(window=4, tolerance=0.1) and back.options == cfg.options
    assert back.time_budget == 2.5 and back.save_predictions and not back.measure_peak and back.profile == 3
    assert json.loads(_config_json(back, 4, tmp_path / "o")) == json.loads(_config_json(cfg, 4, tmp_path / "o"))
    nostab = from_json(_config_json(RunConfig(model="unetpp", stable_tolerance=0), 1, tmp_path))
    assert nostab.stability is None


def test_only_children_before_a_success_run_the_fp32_baseline(tmp_path):
    """A reduced-precision --isolate sweep: the merged record keeps the first successful child's
    baseline, so the later children skip theirs (one fp32 pass, not one per batch size)."""
    cfg = RunConfig(model="unetpp", precision="int8")
    assert from_json(_config_json(cfg, 1, tmp_path, first=True)).fp32_baseline is True
    assert from_json(_config_json(cfg, 4, tmp_path, first=False)).fp32_baseline is False
    off = RunConfig(model="unetpp", precision="int8", fp32_baseline=False)
    assert from_json(_config_json(off, 1, tmp_path, first=True)).fp32_baseline is False


def test_memory_limit_without_isolate_is_a_clear_error():
    with pytest.raises(ZooError, match="--memory-limit needs --isolate"):
        check_config(RunConfig(model="unetpp", memory_limit_mb=100))


def test_an_isolated_sweep_keeps_the_first_batch_sizes_predictions_for_score(run_zoo, tmp_path):
    """--isolate --save-predictions: the children write into temporary folders; the merged record
    keeps the first batch size's predictions beside it, and `python -m zoo score` re-scores them."""
    proc = run_zoo("run", "--model", "unetpp", "--isolate", "--save-predictions", "--batch-sizes", "1,2",
                   "--limit", "2", "--warmup", "0", "--iters", "1", "--no-peak", "--stable-tolerance", "0",
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    rec = json.loads(path.read_text())
    assert rec["predictions"]["path"] == f"{rec['run_id']}.predictions" and rec["predictions"]["num_samples"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{rec['run_id']}.predictions"]
    score = run_zoo("score", path)
    assert score.returncode == 0 and "every figure equals the record's" in score.stdout, score.stderr[-2000:]

"""benchmarks/performance.py: the tables and docs/PERFORMANCE.md from result records (built from
tests/fixtures/result_example.json with the schema 1.11 fields), --summarize's choice of records,
the calibration option it gives zoo bench, and a failed model that stops only itself. No model
runs: the records are constructed, and the one run-mode test starts a stand-in for the model's
python that writes a record."""
from __future__ import annotations

import importlib.util
import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.records import restated

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "result_example.json"
FLOPS = 9_700_000_000               # per sample
FP32_PEAK, INT8_PEAK = 300.0, 600.0  # the fixture's best (bs16, 28.07/s) is 272 GFLOP/s: 91%
FP32_KERNEL, INT8_KERNEL = "onnxruntime Conv 3x3 256ch 64x64", "openvino Conv 3x3 256ch 64x64"
ISA = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
ISA_CHECKED = ISA + ["amx_tile", "amx_bf16", "amx_int8"]


def _script():
    spec = importlib.util.spec_from_file_location("performance", ROOT / "benchmarks" / "performance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _interval(tp: float, half: float | None, tol: float = 0.02, windows: int = 12, reason: str | None = None) -> dict:
    return {"method": "student-t over window means", "confidence": 0.95, "window_calls": 5, "windows": windows,
            "window_throughputs": [tp] * windows, "median": tp,
            "low": None if half is None else tp / (1 + half), "high": None if half is None else tp / (1 - half),
            "half_width": half, "tolerance": tol, "stable": half is not None and half <= tol, "reason": reason}


def _peak(precision: str, gflops: float, kernel: str) -> dict:
    return {"precision": precision, "threads": 2, "method": "the best of 12 kernels", "gflops": gflops,
            "kernel": kernel, "candidates": {kernel: gflops}, "kernel_details": {kernel: "k"}, "refused": {},
            "isa_bound": {"gflops": 332.3, "method": "cores x clock x lanes x FMA units x 2", "assumptions": []},
            "measured_at": "2026-11-22T07:55:00Z", "cached": True}


def _record(precision: str = "fp32", scale: float = 1.0, started: str = "2026-11-22T08:00:00Z",
            unstable_bs: int | None = 16, peak: float | None = None) -> dict:
    """The fixture (onnxruntime, bs 1/4/16, bs64 failed) at schema 1.11, on a 2-thread AVX-512
    machine without AMX: throughputs x `scale`, intervals of +-1.1% (bs `unstable_bs` infer-only
    stopped by its time budget at +-7.1%), GFLOP/s and the fraction of the precision's own peak
    (`peak`, default FP32_PEAK / INT8_PEAK; null with a peak_note above it)."""
    rec = json.loads(FIXTURE.read_text())
    rec["schema_version"] = "1.11"
    rec["precision"] = precision
    rec["run_id"] = f"unetpp-onnxruntime-{precision}-{started}"
    finished = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ") + timedelta(minutes=30)
    rec["timestamps"].update(started=started, finished=finished.strftime("%Y-%m-%dT%H:%M:%SZ"))
    rec["environment"].update(git_dirty=True, command=["python", "-m", "zoo", "bench", "--model", "unetpp"])
    rec["device"]["details"] = {"threads_used": 2, "machine": "x86_64", "isa": ISA, "isa_checked": ISA_CHECKED}
    peak = peak or (INT8_PEAK if precision != "fp32" else FP32_PEAK)
    rec["device"]["fp32_peak"] = _peak("fp32", peak if precision == "fp32" else FP32_PEAK, FP32_KERNEL)
    if precision != "fp32":
        rec["device"]["precision_peak"] = _peak(precision, peak, INT8_KERNEL)
    rec["export"]["cost"] = {"flops_per_sample": FLOPS, "params": 9_163_329}
    for p in rec["perf"]:
        if p["status"] != "ok":
            continue
        p["throughput"] *= scale
        p["interval"] = _interval(p["throughput"], 0.011)
        if p["scope"] == "infer_only" and p["batch_size"] == unstable_bs:
            p["interval"] = _interval(p["throughput"], 0.071,
                                      reason="stopped by the time budget (10 s): +-7.1% above the tolerance +-2.0%")
        p["gflops"] = FLOPS * p["throughput"] / 1e9
        p["peak_gflops"] = peak
        if p["gflops"] > peak:
            p["peak_fraction"] = None
            p["peak_note"] = (f"the model reached {p['gflops']:.1f} GOP/s, above the measured peak {peak:.1f}: "
                              "peak measurement incomplete")
        else:
            p["peak_fraction"] = p["gflops"] / peak
    return restated(rec)


def _int8(speedup: float = 2.38, half: float | None = 0.02, stable: bool = True, peak: float | None = None) -> dict:
    """An int8 run at twice the fixture's speed (bs16: 56.1/s, 545 GOP/s), with its fp32 pass and
    the interleaved speed-up at bs1."""
    rec = _record("int8", scale=2.0, started="2026-11-22T09:00:00Z", unstable_bs=None, peak=peak)
    delta = [{"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": a["value"] + 0.001,
              "delta": a["value"] - (a["value"] + 0.001), "relative_drop": 0.001 / (a["value"] + 0.001),
              "passed": True} for a in rec["accuracy"]]
    rec["reduced_precision"] = {
        "requested": "int8", "executed": "int8",
        "calibration": {"split": "evaluation", "from_evaluation_split": True},
        "fp32_baseline": {"runtime": "onnxruntime 1.31.1 (fp32)", "batch_size": 1, "throughput_samples_per_s": 21.0,
                          "accuracy": [{"name": d["name"], "metric": d["metric"], "value": d["fp32"]} for d in delta],
                          "speedup": speedup,
                          "speedup_interval": {"low": None if half is None else speedup / (1 + half),
                                               "high": None if half is None else speedup / (1 - half),
                                               "half_width": half, "rounds": 6, "stable": stable,
                                               "method": "interleaved windows, t over the rounds' ratios",
                                               "reason": None if stable else "+-6.0% above the tolerance +-2.0%"}},
        "delta": delta, "tolerance": 0.01,
        "fidelity": [{"metric": "fidelity_iou", "value": 0.998, "description": "IoU vs fp32 masks", "num_samples": 134,
                      "per_key": [{"key": "mask", "metric": "fidelity_iou", "value": 0.998}]}],
        "criterion": "accuracy_delta", "trained_weights": True, "passed": True}
    return rec


def _write(folder: Path, name: str, rec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec, indent=1))
    return folder / name


def _table(md: str, title: str) -> dict[tuple[str, str], list[str]]:
    """The Markdown table under `title`: {(runtime, precision): cells}."""
    lines = md.split(f"### {title}", 1)[1].splitlines()[1:]  # past the rest of the title line
    table = []
    for ln in lines:
        if not ln.startswith("|"):
            if table:
                break
            continue
        table.append([c.strip() for c in ln.strip().strip("|").split(" | ")])
    return {(r[1], r[2]): r for r in table[2:]}


def test_page_header_tables_unstable_and_speedup(tmp_path: Path):
    perf = _script()
    out, docs = tmp_path / "perf", tmp_path / "docs" / "PERFORMANCE.md"
    _write(out / "unetpp", "a_fp32.json", _record())
    int8 = _int8()
    int8["device"]["precision_peak"].update(busy=True, others_cpu_share=0.48)
    _write(out / "unetpp", "b_int8.json", int8)
    code = perf.main(["--summarize", "--models", "unetpp", "--out", str(out), "--write-docs", "--docs", str(docs)])
    assert code == 0
    md = docs.read_text()
    assert md == (out / "performance.md").read_text()
    # the header: machine, ISA (and the checked flags absent), threads, dates, commit (dirty), command
    assert "Generated by `benchmarks/performance.py`" in md and "do not edit by hand" in md
    assert "- Machine: Intel(R) Xeon(R) Processor @ 2.80GHz, 2 threads" in md
    assert "- ISA flags: avx2 fma avx512f avx512_vnni avx512_bf16 (absent: amx_bf16 amx_int8 amx_tile)" in md
    assert "- Runs: 2026-11-22T08:00:00Z to 2026-11-22T09:30:00Z (UTC)" in md
    assert "- Commit: 0123456789ab (dirty: the tree had uncommitted changes)" in md
    assert (f"- Command: `python3 benchmarks/performance.py --summarize --models unetpp --out {out} --write-docs "
            f"--docs {docs}`") in md
    assert "- Versions: torch 2.13.0+cpu, onnxruntime 1.31.1" in md
    speed = _table(md, "Speed and distance to the peak")
    # fp32: the best batch size (16, 28.07/s) is UNSTABLE; 272 GFLOP/s of the 300 fp32 peak
    assert speed[("onnxruntime", "fp32")][3:] == ["fp32", "16", "28.1 ±7.1% UNSTABLE", "272 GFLOP/s", "91% of 300",
                                                  FP32_KERNEL]
    # int8: GOP/s against its own precision's peak (600 GOP/s, another kernel), not fp32's
    assert speed[("onnxruntime", "int8")][3:] == ["int8", "16", "56.1 ±1.1%", "545 GOP/s", "91% of 600", INT8_KERNEL]
    assert "1. unetpp onnxruntime fp32 bs16: UNSTABLE: stopped by the time budget (10 s): +-7.1% above" in md
    acc = _table(md, "Speed-up over fp32 (in the same run, interleaved) and accuracy")
    assert acc[("onnxruntime", "fp32")][3:] == ["-", "-", "-", "ok"]
    assert acc[("onnxruntime", "int8")][3:] == ["x2.38 [2.33, 2.43] at bs1, 6 rounds", "-",
                                                "pass (accuracy vs fp32, calibrated on the evaluation split)", "ok"]
    # each peak once (the int8 run's fp32 peak is the fp32 run's), with its kernel, bound and date
    peak_lines = [ln for ln in md.split("### Peaks used", 1)[1].splitlines() if ln.startswith("| ")][1:]
    assert [[c.strip() for c in ln.strip("| ").split(" | ")] for ln in peak_lines] == [
        ["fp32", "300 GFLOP/s", FP32_KERNEL, "332 GFLOP/s", "2026-11-22T07:55:00Z"],
        ["int8", "600 GOP/s", INT8_KERNEL, "332 GOP/s",
         "2026-11-22T07:55:00Z (other processes used 48% of the CPUs: may be low)"]]
    assert "### The zoo commands that measured these records\n\n- `python -m zoo bench --model unetpp`" in md
    data = json.loads((out / "performance.json").read_text())
    assert [(r["precision"], r["batch_size"], r["stable"]) for r in data["rows"]] == [("fp32", 16, False),
                                                                                     ("int8", 16, True)]
    assert data["rows"][1]["speedup"] == 2.38 and data["rows"][1]["speedup_low"] == pytest.approx(2.38 / 1.02)
    assert data["metadata"]["commits"] == ["0123456789abcdef0123456789abcdef01234567"]


def test_a_null_fraction_is_a_dash_with_the_note(tmp_path: Path):
    """A model above its precision's measured peak has peak_fraction null and a peak_note
    (zoo.peaks.set_fraction): '-' in the table, the note under it; never a fraction above 100%."""
    perf = _script()
    out = tmp_path / "perf"
    fp32 = _record(peak=265.0)       # bs16 272 GFLOP/s: above; the others (<= 259) below
    assert next(p for p in fp32["perf"] if p["batch_size"] == 1)["peak_fraction"] == pytest.approx(242.5 / 265)
    _write(out / "unetpp", "a.json", fp32)
    _write(out / "unetpp", "b.json", _int8(peak=500.0))  # bs16 545 GOP/s: above
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(out)]) == 0
    md = (out / "performance.md").read_text()
    speed = _table(md, "Speed and distance to the peak")
    assert speed[("onnxruntime", "fp32")][7:] == ["- [1]", FP32_KERNEL]
    assert speed[("onnxruntime", "int8")][7:] == ["- [4]", INT8_KERNEL]
    notes = md.split("Notes:", 1)[1]
    assert ("1. unetpp onnxruntime fp32 bs16: the model reached 272.3 GOP/s, above the measured peak 265.0: "
            "peak measurement incomplete") in notes
    assert "2. unetpp onnxruntime fp32 bs16: UNSTABLE:" in notes
    assert "3. unetpp onnxruntime fp32: bs64 infer_only failed: out of memory (example)" in notes  # the fixture's
    assert "4. unetpp onnxruntime int8 bs16: the model reached 544.6 GOP/s, above the measured peak 500.0" in notes
    assert "%" not in speed[("onnxruntime", "int8")][7]


def test_a_fraction_below_the_peak_and_an_unstable_speedup(tmp_path: Path):
    perf = _script()
    out = tmp_path / "perf"
    _write(out / "unetpp", "a.json", _record(scale=0.5, unstable_bs=None))  # bs16 14.0/s, 136 GFLOP/s: 45% of 300
    _write(out / "unetpp", "b.json", _int8(2.38, 0.06, False))
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(out)]) == 0
    md = (out / "performance.md").read_text()
    fp32 = _table(md, "Speed and distance to the peak")[("onnxruntime", "fp32")]
    assert fp32[5:8] == ["14.0 ±1.1%", "136 GFLOP/s", "45% of 300"]
    acc = _table(md, "Speed-up over fp32 (in the same run, interleaved) and accuracy")
    assert acc[("onnxruntime", "int8")][3] == "x2.38 [2.25, 2.53] at bs1, 6 rounds UNSTABLE"
    assert "unetpp onnxruntime int8 bs16: speed-up over fp32 UNSTABLE: +-6.0% above the tolerance" in md


def test_summarize_takes_the_newest_record_and_labels_older_schemas(tmp_path: Path):
    perf = _script()
    out = tmp_path / "perf"
    _write(out / "unetpp", "z_old.json", _record(scale=0.5, started="2026-11-21T08:00:00Z"))
    _write(out / "unetpp", "a_new.json", _record(scale=1.0, started="2026-11-23T08:00:00Z"))
    # an int8 record of schema 1.10: no interval (its stability windows give one), a speed-up that
    # is the ratio of two separate timings: never shown as a speed-up
    old = _int8()
    old["schema_version"] = "1.10"
    for p in old["perf"]:
        iv = p.pop("interval", None)
        if iv and p["scope"] == "infer_only":
            mean = 1000.0 * p["batch_size"] / p["throughput"]
            p["stability"] = {"window": 5, "windows": 4, "tolerance": 0.02, "stable": False,
                              "window_means_ms": [mean * 0.9, mean, mean * 1.1, mean], "spread": 0.2}
        p.pop("peak_fraction", None), p.pop("peak_note", None), p.pop("peak_gflops", None)
    del old["reduced_precision"]["fp32_baseline"]["speedup_interval"]
    old["reduced_precision"]["fp32_baseline"]["speedup"] = \
        next(p["throughput"] for p in old["perf"] if p["scope"] == "infer_only" and p["batch_size"] == 1) / 21.0
    _write(out / "unetpp", "c_int8.json", old)
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(out), "--precisions", "fp32,int8"]) == 0
    md = (out / "performance.md").read_text()
    speed = _table(md, "Speed and distance to the peak")
    assert speed[("onnxruntime", "fp32")][5] == "28.1 ±7.1% UNSTABLE"   # the newest, not the 14.0/s one
    # the half-width the 4 stability windows make (Student t, as runner.compare does), UNSTABLE as recorded
    assert speed[("onnxruntime", "int8")][5] == "56.1 ±13.0% UNSTABLE"
    assert "unetpp onnxruntime int8 bs16: UNSTABLE: its stop-when-stable windows were not stable (record before" in md
    acc = _table(md, "Speed-up over fp32 (in the same run, interleaved) and accuracy")
    assert acc[("onnxruntime", "int8")][3] == "- (record before schema 1.11: no interleaved speed-up)"
    assert "- Runs: 2026-11-22T09:00:00Z to 2026-11-23T08:30:00Z" in md


def test_a_contradicting_record_is_refused_in_one_line(tmp_path: Path, capsys):
    perf = _script()
    out = tmp_path / "perf"
    bad = _record()
    next(p for p in bad["perf"] if p["scope"] == "infer_only")["gflops"] *= 2  # not flops x throughput
    _write(out / "unetpp", "a.json", bad)
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "record refused:" in err and "a.json" in err and "gflops ==" in err
    # a file that is not JSON among the records is named too, never skipped in silence
    (out / "unetpp" / "a.json").write_text(json.dumps(_record()))
    (out / "unetpp" / "b.json").write_text("{not json")
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: record refused: " in err and "b.json: not valid JSON" in err
    assert "| unetpp  | onnxruntime | fp32" in (out / "performance.md").read_text()  # the good one still tabulated


def test_bench_args_calibrate_on_the_evaluation_split_only_without_a_calibration_split():
    perf = _script()
    out = Path("o")
    args = perf.bench_args("fcn8s", ["torch", "onnxruntime"], ["fp32", "int8"], "1,2", out, ["--time-budget", "5"])
    assert args == ["bench", "--model", "fcn8s", "--runtimes", "torch,onnxruntime", "--precisions", "fp32,int8",
                    "--out", "o", "--batch-sizes", "1,2", "--calib-from-eval", "--time-budget", "5"]
    assert "--calib-from-eval" not in perf.bench_args("unetpp", ["onnxruntime"], ["int8"], None, out, [])
    assert "--calib-from-eval" not in perf.bench_args("erfnet", ["onnxruntime"], ["fp32", "bf16"], None, out, [])
    assert "--calib-from-eval" not in perf.bench_args("nasfpn", ["onnxruntime"], ["int8"], None, out,
                                                      ["--calib-ids", "ids.txt"])


def test_a_failed_model_is_one_line_and_the_others_go_on(tmp_path: Path, monkeypatch, capsys):
    """Run mode with a stand-in for each model's python (no model runs): it prints zoo's stage
    lines, writes the prepared record into --out/<model>/ and exits 0; for erfnet it fails (exit
    2) after one line."""
    perf = _script()
    out = tmp_path / "perf"
    ready = _write(tmp_path / "prepared", "rec.json", _record())
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
model=$5; out=""
while [ $# -gt 0 ]; do [ "$1" = "--out" ] && out=$2; shift; done
echo "[1/7] weights (builtin)" >&2
echo "[4/7] compile for onnxruntime" >&2
if [ "$model" = erfnet ]; then echo "error: erfnet: no such checkpoint" >&2; exit 2; fi
mkdir -p "$out/$model" && cp {ready} "$out/$model/unetpp-onnxruntime-x.json"
echo "$out/$model/unetpp-onnxruntime-x.json"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(perf, "python_of", lambda model: str(fake))
    monkeypatch.setattr(perf, "ensure_weights", lambda model, work: None)
    monkeypatch.setattr(perf, "ensure_cityscapes", lambda work, tree=None: tmp_path)
    code = perf.main(["--models", "erfnet,unetpp", "--runtimes", "onnxruntime", "--precisions", "fp32",
                      "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: erfnet: zoo bench failed (exit 2): error: erfnet: no such checkpoint" in err
    assert "[unetpp onnxruntime:fp32 1/1 +0:00 | total" in err  # progress: the model, its configuration, time
    md = (out / "performance.md").read_text()
    assert list(_table(md, "Speed and distance to the peak")) == [("onnxruntime", "fp32")]
    assert "### Failed\n\n- erfnet: zoo bench failed (exit 2)" in md
    assert (out / "logs" / "erfnet.log").read_text().splitlines()[-1] == "error: erfnet: no such checkpoint"
    assert json.loads((out / "performance.json").read_text())["failures"][0].startswith("erfnet:")


def test_no_record_is_exit_2(tmp_path: Path, capsys):
    perf = _script()
    assert perf.main(["--summarize", "--models", "unetpp", "--out", str(tmp_path / "none")]) == 2
    assert "no record to tabulate" in capsys.readouterr().err
    assert perf.main(["--summarize", "--models", ","]) == 2
    assert "error: --models names nothing, got ','" in capsys.readouterr().err
    assert perf.main(["--summarize", "--batch-sizes", "unetpp"]) == 2
    assert "error: --batch-sizes 'unetpp': expected MODEL=1,2,4" in capsys.readouterr().err


def test_the_noise_targets_section():
    perf = _script()
    rows = lambda ratios: [{"ratio": r, "low": r * 0.97, "high": r * 1.03} for r in ratios]  # noqa: E731
    noise = {"mode": "ab", "model": "unetpp", "batch_size": 1, "cpu": "AMD EPYC", "date": "2026-12-07T00:40:00Z",
             "results": {"identical": {"expected": "no significant change", "hits": 19, "pairs": 20, "target": 19,
                                       "met": True, "rows": rows([1.0, 1.01])},
                         "planted": {"expected": "slower", "hits": 17, "pairs": 20, "target": 19, "met": False,
                                     "rows": rows([0.9, 0.92])}}}
    text = "\n".join(perf.noise_section(noise))
    assert "ab mode, unetpp bs1, AMD EPYC, 2026-12-07T00:40:00Z" in text
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    assert ["identical", "no significant change", "19/20", "19", "met", "1.000-1.010", "+-3.0%"] in cells
    assert ["planted", "slower", "17/20", "19", "MISSED", "0.900-0.920", "+-3.0%"] in cells

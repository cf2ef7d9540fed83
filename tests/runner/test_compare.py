"""`invoke compare BASELINE NEW`: accuracy deltas, throughput ratios judged with both sides' noise
(window throughputs, rank test, bootstrap interval of the ratio), exit codes, on constructed result
records (the schema-valid fixture, edited)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.compare import comparable_reasons, compare, judge_throughput, run_compare, to_markdown, to_text
from runner.validate import ResultError, load_result
from tests.records import restated

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "result_example.json"
# records of a real short run: `python -m zoo bench --model unetpp --limit 8 --batch-sizes 1,4 --iters 20
# --runtimes torch,onnxruntime,openvino --precisions fp32,int8` (unstable figures, too few windows)
SHORT_BENCH = ROOT / "tests" / "fixtures" / "short_bench"


def base() -> dict:
    return json.loads(FIXTURE.read_text())


def write(folder: Path, name: str, rec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec))
    return folder


# relative deviations of 12 windows from their figure: a fixed pattern, +-1% at most, mean 0
PATTERN = (0.004, -0.007, 0.010, -0.002, 0.006, -0.010, 0.001, -0.004, 0.008, -0.006, 0.003, -0.003)


def windowed(rec: dict, pattern=PATTERN, form: str = "interval", stable: bool = True) -> dict:
    """rec with every ok perf block measured in windows: throughput * (1 + d) for d in `pattern`,
    as the 1.11 `interval` block or as an older record's `stability` block (mean ms per window of
    5 calls); the block's throughput is the windows' (total samples / total time)."""
    from scipy.stats import t
    rec = copy.deepcopy(rec)
    for p in rec["perf"]:
        if p["status"] != "ok":
            continue
        rates = [p["throughput"] * (1 + d) for d in pattern]
        per = [1 / r for r in rates]  # the 95% t-interval of the mean time per sample, relative
        mean = sum(per) / len(per) if per else 0
        sd = (sum((x - mean) ** 2 for x in per) / (len(per) - 1)) ** 0.5 if len(per) > 1 else 0
        half = t.ppf(0.975, len(per) - 1) * sd / len(per) ** 0.5 / mean if len(per) >= 3 else None
        if rates:
            p["throughput"] = len(rates) / sum(1 / r for r in rates)
        if form == "interval":
            p["interval"] = {"method": "student-t over window means", "confidence": 0.95, "window_calls": 5,
                             "windows": len(rates), "window_throughputs": rates,
                             "median": sorted(rates)[len(rates) // 2] if rates else None,
                             "low": None, "high": None, "half_width": half if stable else 0.071,
                             "tolerance": 0.02, "stable": stable,
                             "reason": None if stable else "time budget reached at +-7.1%"}
        else:
            p["stability"] = {"window": 5, "windows": 3, "tolerance": 0.05, "stable": stable,
                              "window_means_ms": [1000.0 * p["batch_size"] / r for r in rates], "spread": 0.02}
    return restated(rec)


def scaled(rec: dict, acc: dict | None = None, thr: float = 1.0, bs_fail: int | None = None) -> dict:
    rec = copy.deepcopy(rec)
    for a in rec["accuracy"]:
        if acc and a["name"] in acc:
            a["value"] = acc[a["name"]]
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["throughput"] *= thr
            if p.get("interval"):
                p["interval"]["window_throughputs"] = [w * thr for w in p["interval"]["window_throughputs"]]
            if p.get("stability"):
                p["stability"]["window_means_ms"] = [m / thr for m in p["stability"]["window_means_ms"]]
        if bs_fail is not None and p["batch_size"] == bs_fail:
            p.update(status="failed", error="out of memory", throughput=None)
    rec["timestamps"]["finished"] = "2026-11-23T00:00:00Z"
    return restated(rec)  # its derived figures too: the readers refuse a record that contradicts itself


def by_item(c):
    return {(r.kind, r.item): r for r in c.rows}


def test_identical_sets_pass():
    c = compare([base()], [base()])
    assert c.regressions == []
    rows = by_item(c)
    assert rows[("accuracy", "guide iou")].change == 0.0 and rows[("accuracy", "guide iou")].status == "ok"
    assert rows[("throughput", "bs4 infer_only")].change == pytest.approx(1.0)
    # the fixture's blocks have no windows: no uncertainty to judge with, visible, not a regression
    assert rows[("throughput", "bs4 infer_only")].verdict == "not comparable"
    assert rows[("throughput", "bs4 infer_only")].reasons == ["no windows on either side"]
    # bs64 failed in both: not a comparison row
    assert ("throughput", "bs64 infer_only") not in rows


def test_identical_window_series_are_no_significant_change():
    w = windowed(base())
    c = compare([w], [w])
    assert c.regressions == [] and c.verdicts["no significant change"] == 6
    r = by_item(c)[("throughput", "bs4 infer_only")]
    assert r.verdict == "no significant change" and r.status == "ok" and r.reasons == []
    assert r.p_value == pytest.approx(1.0) and r.ratio_low < 1 < r.ratio_high and r.change == pytest.approx(1.0)


def test_ten_percent_slower_with_tight_windows_is_slower_and_gated_by_the_threshold():
    w = windowed(base())
    slow = scaled(w, thr=0.90)
    strict = compare([w], [slow], max_throughput_drop=0.05)
    assert len(strict.regressions) == 6 and strict.verdicts["slower"] == 6
    r = by_item(strict)[("throughput", "bs16 pipeline")]
    assert r.verdict == "slower" and r.status == "regression" and r.change == pytest.approx(0.90)
    assert r.p_value < 0.001 and r.ratio_low < 0.90 < r.ratio_high < 0.92
    loose = compare([w], [slow], max_throughput_drop=0.20)
    assert loose.regressions == [] and loose.verdicts["slower"] == 6
    assert by_item(loose)[("throughput", "bs16 pipeline")].note == "within the 20% allowed"
    # reproducible: the bootstrap is seeded
    again = by_item(compare([w], [slow], max_throughput_drop=0.05))[("throughput", "bs16 pipeline")]
    assert (again.ratio_low, again.ratio_high, again.p_value) == (r.ratio_low, r.ratio_high, r.p_value)


def test_faster_is_improved_and_never_a_regression():
    w = windowed(base())
    c = compare([w], [scaled(w, thr=1.10)])
    assert c.regressions == [] and c.verdicts["faster"] == 6
    r = by_item(c)[("throughput", "bs1 infer_only")]
    assert r.verdict == "faster" and r.status == "improved" and 1.08 < r.ratio_low < 1.10 < r.ratio_high


def test_a_change_below_min_effect_is_no_significant_change_even_when_significant():
    w = windowed(base())
    tiny = scaled(w, thr=0.985)  # every window 1.5% lower: the rank test is certain, the change is small
    r = by_item(compare([w], [tiny]))[("throughput", "bs4 infer_only")]
    assert r.p_value < 0.05 and r.ratio_high < 1 and r.verdict == "no significant change"
    finer = by_item(compare([w], [tiny], min_effect=0.01))[("throughput", "bs4 infer_only")]
    assert finer.verdict == "slower" and finer.status == "ok"
    with pytest.raises(ResultError, match="thresholds"):
        compare([w], [tiny], min_effect=1.0)


def test_noise_is_flagged_in_neither_direction():
    """The reported problem: two runs of one configuration, a 'change' either way. Two draws of
    12 windows from one distribution (+-2% noise): no significant change, both ways round."""
    import numpy as np
    rng = np.random.default_rng(7)
    one, two = (windowed(base(), tuple(rng.normal(0, 0.02, 12))) for _ in range(2))
    for b, n in ((one, two), (two, one)):
        c = compare([b], [n])
        assert c.regressions == [] and c.verdicts["no significant change"] == 6, to_markdown(c)
        assert all(r.p_value >= 0.05 and r.reasons == [] for r in c.rows if r.kind == "throughput")


def test_an_unstable_side_is_not_comparable_and_badged():
    w = windowed(base())
    shaky = scaled(windowed(base(), stable=False), thr=0.5)
    for b, n, who in ((w, shaky, "new"), (shaky, w, "baseline")):
        c = compare([b], [n])
        assert c.regressions == [] and c.verdicts["not comparable"] == 6
        r = by_item(c)[("throughput", "bs1 infer_only")]
        assert r.verdict == "not comparable" and r.reasons == [f"{who} unstable (±7.1%)"]
        assert getattr(r, f"{who}_unstable") is True and r.p_value is None and r.ratio_low is None
        assert "±7.1% UNSTABLE" in to_markdown(c)


def test_another_machine_isa_threads_or_precision_is_not_comparable():
    w = windowed(base())
    w["device"]["details"] = {"threads_used": 2, "machine": "x86_64", "isa": ["avx2", "fma"],
                              "isa_checked": ["avx2", "fma", "avx512f"]}
    w["runtime"]["settings"]["threads"] = 2
    slow = scaled(w, thr=0.5)
    isa = copy.deepcopy(slow)
    isa["device"]["details"]["isa"].append("avx512f")
    threads = copy.deepcopy(slow)
    threads["runtime"]["settings"]["threads"] = 1
    used = copy.deepcopy(slow)
    used["device"]["details"]["threads_used"] = 4
    executed = copy.deepcopy(slow)  # openvino reads back what each batch size ran in
    executed["runtime"]["settings"]["executed_precision_per_batch"] = {"4": "bf16"}
    cases = ((isa, "ISA flags differ (new: +avx512f)", 6), (threads, "runtime threads differ (2 vs 1)", 6),
             (used, "threads used differ (2 vs 4)", 6), (executed, "executed precision differs (fp32 vs bf16)", 2))
    for new, reason, n in cases:
        c = compare([w], [new])
        assert len(c.regressions) == 6 - n and c.verdicts["not comparable"] == n, reason
        assert [r.reasons for r in c.rows if r.verdict == "not comparable"] == [[reason]] * n
        if n == 6:  # every row: said once, above the table
            assert f"Throughput not comparable: {reason}." in to_markdown(c)
    assert compare([w], [slow]).verdicts["slower"] == 6  # the same machine: judged
    same = {"guide": 0.8369, "upstream": 0.84}  # one key (bf16), but the runtime fell back to fp32
    asked = windowed(reduced(base(), same, same))
    fell_back = scaled(asked, thr=0.5)
    fell_back["reduced_precision"]["executed"] = "fp32"
    c = compare([asked], [fell_back])
    assert c.regressions == [] and c.verdicts["not comparable"] == 6
    assert by_item(c)[("throughput", "bs1 pipeline")].reasons == ["executed precision differs (bf16 vs fp32)"]
    other_cpu = copy.deepcopy(slow)
    other_cpu["device"]["name"] = "AMD EPYC 7B13"
    assert comparable_reasons(w, other_cpu) == ["CPU differs (Intel(R) Xeon(R) Processor @ 2.80GHz vs AMD EPYC 7B13)"]
    pb, pn = w["perf"][0], other_cpu["perf"][0]
    judged = judge_throughput(pb, pn, comparable_reasons(w, other_cpu))
    assert judged["verdict"] == "not comparable" and judged["status"] == "not comparable"
    # compare() pairs records by device type: another CPU compares accuracy; throughput is not comparable
    c = compare([w], [other_cpu])
    assert c.regressions == [] and c.verdicts["not comparable"] == 6
    assert by_item(c)[("throughput", "bs1 infer_only")].reasons == [
        "CPU differs (Intel(R) Xeon(R) Processor @ 2.80GHz vs AMD EPYC 7B13)"]


def test_old_stability_windows_are_read_and_a_record_without_windows_is_not_comparable():
    old = windowed(base(), form="stability")
    r = by_item(compare([old], [scaled(old, thr=0.85)]))[("throughput", "bs4 infer_only")]
    assert r.verdict == "slower" and r.status == "regression" and r.baseline_windows == r.new_windows == 12
    assert r.baseline_half_width == pytest.approx(0.0039, abs=0.0005)  # the t-interval of the windows
    new = windowed(base())  # an old baseline against a 1.11 run
    assert by_item(compare([old], [new]))[("throughput", "bs4 infer_only")].verdict == "no significant change"
    bare = scaled(base(), thr=0.5)
    c = compare([new], [bare])
    assert c.regressions == [] and c.verdicts["not comparable"] == 6
    assert by_item(c)[("throughput", "bs4 infer_only")].reasons == ["new: no windows"]
    few = windowed(base(), pattern=(0.01, -0.01))
    assert by_item(compare([few], [new]))[("throughput", "bs4 infer_only")].reasons == ["baseline: 2 windows, too few"]
    shaky_old = windowed(base(), form="stability", stable=False)
    shaky = by_item(compare([shaky_old], [new]))[("throughput", "bs1 infer_only")]
    assert shaky.reasons[0].startswith("baseline unstable")
    # 3 windows a side: the rank test cannot reach p < 0.05, said so
    three = windowed(base(), pattern=PATTERN[:3], form="stability")
    r = by_item(compare([three], [scaled(three, thr=0.5)]))[("throughput", "bs1 infer_only")]
    assert r.verdict == "no significant change" and r.p_value == pytest.approx(0.1)
    assert r.note == "3 vs 3 windows: too few for p < 0.05"


def test_markdown_groups_rows_under_their_key_with_the_noise_shown():
    w = windowed(base())
    c = compare([w], [scaled(w, thr=0.9)], max_throughput_drop=0.05)
    md = to_markdown(c)
    key = "unetpp / upsample=bilinear / onnxruntime / cpu / fp32"
    assert md.count(f"## {key}") == 1 and md.count(key) == 1
    assert ("Regressions: **6**. Throughput: 0 faster, 6 slower, 0 no significant change, "
            "0 not comparable.") in md
    (row,) = [line for line in md.splitlines() if line.startswith("| bs4 infer_only |")]
    r = by_item(c)[("throughput", "bs4 infer_only")]
    assert row == (f"| bs4 infer_only | {r.baseline:.2f} ±0.4% | {r.new:.2f} ±0.4% | "
                   f"0.900 [{r.ratio_low:.3f}, {r.ratio_high:.3f}] | <0.001 | slower, REGRESSION |")
    assert max(len(line) for line in md.splitlines() if not line.startswith("## ")) <= 100
    assert "ratio of means" in md and "Mann-Whitney" in md


def test_terminal_text_has_one_heading_per_configuration_and_fits_100_columns():
    """Real records of a short run (figures UNSTABLE, pipelines of 2 windows) against themselves
    and against a judged, slower copy: one heading per configuration, rows with only the batch
    size, scope, figures and verdict, every line within 100 columns."""
    recs = [load_result(p) for p in sorted(SHORT_BENCH.glob("*.json"))]
    text = to_text(compare(recs, recs))
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    heads = [line for line in lines if line.startswith("== ")]
    assert sorted(heads) == sorted(f"== unetpp {r['runtime']['name']} {r['precision']} on cpu" for r in recs)
    assert "unetpp / " not in text  # the configuration is never repeated on a row
    row = next(line for line in lines if line.split()[:2] == ["4", "pipeline"])
    assert row.count("±? (2 windows) UNSTABLE") == 2 and row.endswith("not comparable")
    w = windowed(base())
    w["perf"][0]["interval"].update(stable=False, half_width=0.071)  # one side unstable beside judged rows
    slow = scaled(w, thr=0.9)
    judged = to_text(compare([w], [slow], max_throughput_drop=0.05))
    assert all(len(line) <= 100 for line in judged.splitlines()), judged
    assert judged.count("== unetpp onnxruntime fp32 on cpu (upsample=bilinear)") == 1
    r = by_item(compare([w], [slow], max_throughput_drop=0.05))[("throughput", "bs4 infer_only")]
    (cells,) = [line.split("  ") for line in judged.splitlines() if line.split()[:2] == ["4", "infer_only"]]
    cells = [c.strip() for c in cells if c.strip()]
    assert cells == ["4", "infer_only", f"{r.baseline:.2f} ±0.4%", f"{r.new:.2f} ±0.4%",
                     f"0.900 [{r.ratio_low:.3f}, {r.ratio_high:.3f}]", "<0.001", "slower, REGRESSION"]
    assert "  bs1 infer_only: baseline unstable (±7.1%); new unstable (±7.1%)" in judged.splitlines()


def test_accuracy_drop_threshold_is_relative():
    b = base()  # guide 0.8369
    ok = compare([b], [scaled(b, {"guide": 0.8369 * 0.991})])
    assert ok.regressions == []
    bad = compare([b], [scaled(b, {"guide": 0.8369 * 0.985})])
    (r,) = bad.regressions
    assert r.kind == "accuracy" and r.item == "guide iou" and r.change == pytest.approx(0.015)
    better = by_item(compare([b], [scaled(b, {"upstream": 0.86})]))[("accuracy", "upstream iou")]
    assert better.status == "improved"
    assert compare([b], [scaled(b, {"guide": 0.8369 * 0.985})], max_accuracy_drop=0.02).regressions == []


def test_throughput_drop_and_failed_batch():
    b = windowed(base())
    assert compare([b], [scaled(b, thr=0.92)]).regressions == []  # slower, within 10%
    slow = compare([b], [scaled(b, thr=0.85)])
    assert {r.item for r in slow.regressions} == {f"bs{n} {s}" for n in (1, 4, 16) for s in ("infer_only", "pipeline")}
    assert all(r.change == pytest.approx(0.85) for r in slow.regressions)
    failed = compare([b], [scaled(b, bs_fail=16)])
    assert {(r.item, r.status) for r in failed.regressions} == {("bs16 infer_only", "failed"), ("bs16 pipeline", "failed")}
    assert "out of memory" in failed.regressions[0].note


def test_missing_run_and_newest_record_wins():
    b = base()
    other = copy.deepcopy(b)
    other["runtime"]["name"] = "torch"
    c = compare([b, other], [b])
    (r,) = c.regressions
    assert r.kind == "missing" and "/ torch /" in r.key
    assert compare([b, other], [b], allow_missing=True).regressions == []
    old_bad = scaled(b, {"guide": 0.5})
    old_bad["timestamps"]["finished"] = "2020-01-01T00:00:00Z"
    assert compare([b], [old_bad, b]).regressions == []  # the newer record of the key is used
    assert [r.status for r in compare([b], [b, other]).rows if r.kind == "missing"] == ["new"]


def test_cli_exit_codes_and_outputs(tmp_path):
    b = base()
    write(tmp_path / "base", "r.json", b)
    write(tmp_path / "same", "r.json", b)
    write(tmp_path / "worse", "r.json", scaled(b, {"guide": 0.80}))

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "compare", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True)

    ok = invoke(tmp_path / "base", tmp_path / "same", "--out", tmp_path / "cmp")
    assert ok.returncode == 0, ok.stderr
    assert "== unetpp onnxruntime fp32 on cpu (upsample=bilinear)" in ok.stdout and "Regressions: 0." in ok.stdout
    assert all(len(line) <= 100 for line in ok.stdout.splitlines()), ok.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["kind"] == "zoo.comparison" and saved["regressions"] == 0 and saved["rows"]
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("# Comparison")
    bad = invoke(tmp_path / "base", tmp_path / "worse")
    assert bad.returncode == 1 and "1 regression(s)" in bad.stderr and "regression" in bad.stdout
    assert invoke(tmp_path / "base", tmp_path / "worse", "--max-accuracy-drop", "0.5").returncode == 0
    missing = invoke(tmp_path / "base", tmp_path / "nowhere")
    assert missing.returncode == 2 and "results folder does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    assert "no result records found" in invoke(tmp_path / "base", tmp_path / "empty").stderr


def test_invalid_record_and_thresholds(tmp_path):
    rec = base()
    del rec["perf"]
    write(tmp_path / "bad", "r.json", rec)
    with pytest.raises(ResultError, match="does not match"):
        run_compare(FIXTURE, tmp_path / "bad")
    with pytest.raises(ResultError, match="thresholds"):
        compare([base()], [base()], max_throughput_drop=1.5)


def test_accuracy_only_matches_another_machine_and_ignores_throughput():
    b = base()
    elsewhere = scaled(b, thr=0.3)           # a slower machine: throughput is not comparable
    elsewhere["device"]["name"] = "Some Other CPU @ 2.0GHz"
    strict = compare([b], [elsewhere])       # paired by device type; the throughput is not comparable
    assert strict.regressions == [] and strict.verdicts["not comparable"] == 6
    c = compare([b], [elsewhere], accuracy_only=True)
    assert c.regressions == [] and c.thresholds["accuracy_only"] is True
    assert {r.kind for r in c.rows} == {"accuracy"} and all(" / cpu / " in r.key for r in c.rows)
    worse = scaled(elsewhere, {"guide": 0.8369 * 0.98})
    (r,) = compare([b], [worse], accuracy_only=True).regressions
    assert r.item == "guide iou" and r.change == pytest.approx(0.02)
    gpu = copy.deepcopy(elsewhere)
    gpu["device"]["type"] = "cuda"          # the device type stays in the key
    assert {r.status for r in compare([b], [gpu], accuracy_only=True).regressions} == {"missing"}


def test_the_committed_ci_baseline_is_valid_and_from_built_in_data():
    from runner.validate import load_results
    recs = load_results(ROOT / "benchmarks" / "baselines")
    assert recs, "the CI gate's baseline records are missing"
    for rec in recs:
        assert rec["provenance"]["dataset"]["builtin"] is True and rec["provenance"]["weights"]["builtin"] is True
        assert all(a["num_samples"] > 0 for a in rec["accuracy"])


def test_compare_json_is_strict_json():
    """Derived figures with no value (a ratio over zero) are written as null, never a bare NaN."""
    import json
    from zoo.schema import finite_or_none
    assert finite_or_none({"a": [1.0, float("nan"), {"b": float("-inf")}], "c": "x"}) == {"a": [1.0, None, {"b": None}], "c": "x"}
    json.dumps(finite_or_none([float("inf")]), allow_nan=False)


def test_a_failed_verify_in_the_new_run_is_a_regression():
    """Schema 1.6: the runtime under test beyond the model's tolerance of PyTorch fails the gate,
    even with equal accuracy (and in accuracy-only mode); a passed verify adds no row."""
    b = base()
    comparison = {"reference": "torch (the loaded PyTorch module, fp32)", "candidate": "openvino 2025.1",
                  "batch_size": 4, "precision": "fp32", "max_abs_diff": 0.5, "max_rel_diff": 0.02,
                  "mean_abs_diff": 0.01, "rtol": 1e-4, "atol": 1e-5, "numerics_passed": False,
                  "decisions": {"guide": {"flips": 300, "decisions": 36864, "fraction": 300 / 36864}},
                  "decision_flips": 300, "max_flip_fraction": 1e-4, "passed": False}
    bad = scaled(b)
    bad["schema_version"] = "1.6"
    bad["verify"] = comparison
    for accuracy_only in (False, True):
        status, r = compare([b], [bad], accuracy_only=accuracy_only).regressions
        assert r.item == "verify vs PyTorch" and r.status == "failed" and "300 decision flips" in r.note
        # a 1.6 record said ok over a failed verify: read as invalid (zoo.checks.status_of), a regression by status too
        assert status.item == "record status" and status.status == "failed"
        assert status.note.startswith("invalid: verify failed: openvino 2025.1 vs torch (fp32): max_rel_diff 0.02")
    good = copy.deepcopy(bad)
    good["verify"].update(passed=True, numerics_passed=True, decision_flips=0, max_rel_diff=1e-6)
    assert compare([b], [good]).regressions == []
    assert ("accuracy", "verify vs PyTorch") not in by_item(compare([b], [good]))
    # the records are schema-valid as constructed
    from runner.validate import validate_record
    validate_record(bad)


def reduced(rec: dict, values: dict, fp32: dict, criterion: str = "accuracy_delta", fidelity: float = 0.998,
            tolerance: float = 0.01) -> dict:
    """A bf16 record of the fixture's key with a schema-1.7 `reduced_precision` block: its
    accuracy `values`, the fp32 baseline it ran `fp32`, and `passed` by the criterion's rule."""
    rec = scaled(rec, values)
    rec["schema_version"], rec["precision"] = "1.7", "bf16"
    delta = []
    for a in rec["accuracy"]:
        ref = fp32[a["name"]]
        drop = (ref - a["value"]) / ref
        delta.append({"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": ref,
                      "delta": a["value"] - ref, "relative_drop": drop, "passed": drop <= tolerance})
    fid = {"metric": "fidelity_iou", "value": fidelity, "description": "d", "num_samples": 134,
           "per_key": [{"key": "guide", "metric": "fidelity_iou", "value": fidelity}]}
    passed = all(d["passed"] for d in delta) if criterion == "accuracy_delta" else fidelity >= 1 - tolerance
    rec["reduced_precision"] = {
        "requested": "bf16", "executed": "bf16", "calibration": None,
        "fp32_baseline": {"runtime": "openvino 2026.4.1 (fp32)", "batch_size": 1, "throughput_samples_per_s": 12.0,
                          "accuracy": [{"name": k, "metric": "iou", "value": v} for k, v in fp32.items()]},
        "delta": delta, "fidelity": [fid], "tolerance": tolerance, "criterion": criterion,
        "trained_weights": criterion == "accuracy_delta", "passed": passed}
    return rec


def test_a_reduced_precision_run_that_failed_its_own_fp32_baseline_is_a_regression():
    """Schema 1.7: judged in the new set alone (no bf16 baseline record needed): the accuracy delta
    to its own fp32 pass for a trained checkpoint, the fidelity to fp32 for other weights."""
    from runner.validate import validate_record
    b = base()
    fp32 = {"guide": 0.8369, "upstream": 0.84}
    good = reduced(b, {"guide": 0.8349, "upstream": 0.8390}, fp32)
    validate_record(good)
    c = compare([b], [b, good])
    assert c.regressions == []
    row = by_item(c)[("accuracy", "bf16 vs its fp32 baseline (accuracy_delta)")]
    assert row.status == "ok" and row.change == pytest.approx((0.8369 - 0.8349) / 0.8369)
    bad = reduced(b, {"guide": 0.8200, "upstream": 0.8390}, fp32)
    assert bad["reduced_precision"]["passed"] is False
    validate_record(bad)
    for accuracy_only in (False, True):
        regs = compare([b], [bad], accuracy_only=accuracy_only).regressions
        (r,) = [r for r in regs if r.item.startswith("bf16 vs")]
        assert r.status == "regression" and r.new == 0.82 and r.baseline == 0.8369 and "guide beyond" in r.note
    # untrained weights: the fidelity decides, whatever the (meaningless) accuracy deltas
    fid_bad = reduced(b, {"guide": 0.8369, "upstream": 0.84}, fp32, criterion="fidelity_to_fp32", fidelity=0.97)
    validate_record(fid_bad)
    (r,) = compare([b], [b, fid_bad]).regressions
    assert r.item == "bf16 vs its fp32 baseline (fidelity_to_fp32)" and r.change == pytest.approx(0.03)
    fid_ok = reduced(b, {"guide": 0.5, "upstream": 0.84}, {"guide": 0.5, "upstream": 0.84},
                     criterion="fidelity_to_fp32", fidelity=0.995)
    assert [r for r in compare([fid_ok], [fid_ok]).regressions] == []


def test_a_reduced_precision_run_far_below_the_sets_fp32_run_is_a_regression():
    """Within one result set: the bf16 run of a model / variant / runtime / device against the fp32
    run of the same key, per protocol, with the accuracy threshold (also without a
    reduced_precision block, as records before 1.7)."""
    b = base()
    bf16 = scaled(b, {"guide": 0.8369 * 0.995})
    bf16["precision"] = "bf16"
    c = compare([b, bf16], [b, bf16])
    row = by_item(c)[("accuracy", "guide iou vs the fp32 run")]
    assert row.status == "ok" and row.change == pytest.approx(0.005) and c.regressions == []
    worse = scaled(b, {"guide": 0.8369 * 0.98})
    worse["precision"] = "bf16"
    (r,) = compare([b], [b, worse]).regressions  # no bf16 run in the baseline set: only the set's own fp32 run
    assert r.item == "guide iou vs the fp32 run" and r.change == pytest.approx(0.02) and r.baseline == 0.8369
    loose = by_item(compare([b], [b, worse], max_accuracy_drop=0.03))
    assert loose[("accuracy", "guide iou vs the fp32 run")].status == "ok"
    other_runtime = copy.deepcopy(worse)
    other_runtime["runtime"]["name"] = "torch"  # no fp32 torch run in the set: nothing to compare with
    assert not [r for r in compare([b], [b, other_runtime]).rows if "vs the fp32 run" in r.item]


def test_old_style_windowed_records_through_files_and_the_cli(tmp_path):
    """Records that validate (the old `stability` form): a 15% slower new run fails the gate with
    exit 1, the same run twice passes, and compare.json keeps every figure of the verdict."""
    from runner.validate import validate_record
    b = windowed(base(), form="stability")
    slow = scaled(b, thr=0.85)
    for rec in (b, slow):
        validate_record(rec)
    write(tmp_path / "base", "r.json", b)
    write(tmp_path / "slow", "r.json", slow)

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "compare", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True)

    bad = invoke(tmp_path / "base", tmp_path / "slow", "--out", tmp_path / "cmp")
    assert bad.returncode == 1 and "6 regression(s)" in bad.stderr, bad.stderr
    assert "6 slower" in bad.stdout and "slower, REGRESSION" in bad.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["verdicts"] == {"faster": 0, "slower": 6, "no significant change": 0, "not comparable": 0}
    row = next(r for r in saved["rows"] if r["item"] == "bs1 infer_only")
    assert row["verdict"] == "slower" and row["status"] == "regression" and row["reasons"] == []
    assert row["change"] == pytest.approx(0.85) and row["ratio_low"] < 0.85 < row["ratio_high"]
    assert row["p_value"] < 0.001
    assert saved["thresholds"]["min_effect"] == 0.02 and "bootstrap" in saved["thresholds"]["method"]
    assert invoke(tmp_path / "base", tmp_path / "slow", "--max-throughput-drop", "0.2").returncode == 0
    assert invoke(tmp_path / "base", tmp_path / "slow", "--min-effect", "0.5").returncode == 0
    assert invoke(tmp_path / "base", tmp_path / "base").returncode == 0

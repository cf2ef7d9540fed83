"""runner.report: guide-style Markdown/HTML report from a folder of result JSONs."""
from __future__ import annotations

import base64
import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from runner.report import main, write_report
from runner.validate import ResultError
from tests.records import restated

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TORCH_INFER = {1: 50.0, 4: 60.0, 16: 30.0}  # fixture onnxruntime: 25.0, 26.67, 28.07 (bs 64 failed)


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def _write(folder: Path, name: str, record: dict) -> None:
    """The record with its derived figures stated again (tests.records: the readers refuse a
    record whose figures contradict each other)."""
    (folder / name).write_text(json.dumps(restated(copy.deepcopy(record)), indent=1))


def _torch_run() -> dict:
    rec = _fixture()
    rec["runtime"]["name"] = "torch"
    rec["run_id"] = "unetpp-torch-20261122T090000Z"
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["throughput"] = TORCH_INFER[p["batch_size"]] * (1 if p["scope"] == "infer_only" else 0.5)
    return rec


def _limited_run() -> dict:
    rec = _fixture()
    rec["run_id"] = "unetpp-onnxruntime-limited"
    rec["provenance"]["dataset"].update(num_samples=12, limit=12)
    for acc in rec["accuracy"]:
        acc["num_samples"] = 12
    rec["accuracy"][0]["value"] = 0.8123
    return rec


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    _write(folder, "a_onnxruntime.json", _fixture())
    _write(folder, "b_torch.json", _torch_run())
    _write(folder, "c_limited.json", _limited_run())
    return folder


def _table(md: str, title: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table under the bold title line."""
    lines = md.splitlines()
    start = lines.index(f"**{title}**") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows  # header, separator, data rows


# ---------------------------------------------------------------- per-class IoU and all figures

CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
              "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
              "motorcycle", "bicycle")


def _class_ious(offset: float) -> list[float]:
    return [round(0.5 + 0.02 * i + offset, 6) for i in range(len(CITYSCAPES))]


def _seg_run(runtime: str, run_id: str, offset: float, upstream_per_class: bool = False) -> dict:
    """The fixture turned into a Cityscapes-style record: the guide block gets per_class and the
    SegmenTron figures (final and running-average values); optionally the upstream block too."""
    rec = _fixture()
    rec["schema_version"] = "1.1"
    rec["model"].update(name="fastscnn", title="Fast-SCNN, Cityscapes val")
    rec["runtime"]["name"] = runtime
    rec["run_id"] = run_id
    guide, upstream = rec["accuracy"]
    guide.update(metric="miou", value=0.685 + offset, metrics={
        "miou": 0.685 + offset, "pix_acc": 0.95123, "pix_acc_true": 0.95207,
        "running_avg_miou": 0.68667, "running_avg_pix_acc": 0.953527, "num_samples": 134.0})
    guide["per_class"] = [{"class": c, "iou": v} for c, v in zip(CITYSCAPES, _class_ious(offset))]
    if upstream_per_class:
        upstream["per_class"] = [{"class": c, "iou": 0.25} for c in CITYSCAPES[:3]]
    return rec


@pytest.fixture
def seg_results(tmp_path: Path) -> Path:
    folder = tmp_path / "seg"
    folder.mkdir()
    _write(folder, "a.json", _seg_run("onnxruntime", "fastscnn-onnxruntime-1", 0.0))
    _write(folder, "b.json", _seg_run("torch", "fastscnn-torch-1", 0.00007, upstream_per_class=True))
    limited = _seg_run("onnxruntime", "fastscnn-onnxruntime-limited", -0.1)
    limited["provenance"]["dataset"].update(num_samples=12, limit=12)
    for acc in limited["accuracy"]:
        acc["num_samples"] = 12
    _write(folder, "c.json", limited)
    return folder


def test_per_class_tables(seg_results: Path, tmp_path: Path):
    md = write_report(seg_results, tmp_path / "out")["markdown"].read_text()
    ort, torch, lim = ("onnxruntime cpu fp32 (fastscnn-onnxruntime-1)", "torch cpu fp32",
                       "onnxruntime cpu fp32 (fastscnn-onnxruntime-limited)")
    guide = _table(md, "Per-class IoU, protocol guide")
    assert guide[0] == ["class", ort, torch, lim]              # same run labels as the other tables
    rows = guide[2:]
    assert [r[0] for r in rows] == list(CITYSCAPES)
    by_class = {r[0]: r[1:] for r in rows}
    assert by_class["road"] == ["0.5000", "0.5001", "0.4000"]   # 4 decimals (0.50007 -> 0.5001)
    assert by_class["traffic light"] == ["0.6200", "0.6201", "0.5200"]
    assert by_class["bicycle"] == ["0.8600", "0.8601", "0.7600"]
    assert f"{lim}: (subset: 12 of 134), not comparable to the full set" in md
    # only the torch run has upstream per-class figures: one column, three classes
    upstream = _table(md, "Per-class IoU, protocol upstream")
    assert upstream[0] == ["class", torch]
    assert upstream[2:] == [["road", "0.2500"], ["sidewalk", "0.2500"], ["building", "0.2500"]]
    # the tables follow the accuracy table, before the performance section
    assert md.index("**Accuracy vs reference**") < md.index("**Per-class IoU, protocol guide**") \
        < md.index("**Per-class IoU, protocol upstream**") < md.index("### Performance")


def test_all_figures_listed_under_the_accuracy_table(seg_results: Path, tmp_path: Path):
    md = write_report(seg_results, tmp_path / "out")["markdown"].read_text()
    acc_start = md.index("**Accuracy vs reference**")
    notes = md[acc_start:md.index("**Per-class IoU, protocol guide**")]
    assert ("figures, torch cpu fp32, guide: miou 0.6851, pix_acc 0.9512, pix_acc_true 0.9521, "
            "running_avg_miou 0.6867, running_avg_pix_acc 0.9535, num_samples 134") in notes
    assert "figures, onnxruntime cpu fp32 (fastscnn-onnxruntime-limited), guide: miou 0.5850," in notes
    assert "running_avg_*: mean over the images of the running dataset-level value after each image" in notes
    # the unetpp fixture has no per-class figures and no running averages
    plain = tmp_path / "plain"
    plain.mkdir()
    _write(plain, "a.json", _fixture())
    md_plain = write_report(plain, tmp_path / "out_plain")["markdown"].read_text()
    assert "Per-class IoU" not in md_plain and "running_avg_" not in md_plain


def test_per_class_tables_in_html(seg_results: Path, tmp_path: Path):
    written = write_report(seg_results, tmp_path / "out")
    page = _Collector()
    text = written["html"].read_text()
    page.feed(text)
    # runs overview + accuracy + 2 per-class + infer_only + pipeline (each with its across-runs ratio
    # table) + per run latency + stages
    assert page.tables == 1 + 1 + 2 + 2 * 2 + 3 * 2
    assert "<caption>Per-class IoU, protocol guide</caption>" in text
    assert '<td>traffic light</td><td class="n">0.6200</td><td class="n">0.6201</td>' in text
    assert "running_avg_miou 0.6867" in text


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.imgs = 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.imgs.append(dict(attrs))


def test_markdown_accuracy_and_provenance(results: Path, tmp_path: Path):
    written = write_report(results, tmp_path / "out")
    md = written["markdown"].read_text()
    acc = _table(md, "Accuracy vs reference")
    assert acc[0] == ["runtime", "protocol", "metric", "ours", "reference", "reference source",
                      "delta", "relative drop", "pass"]
    rows = acc[2:]
    assert len(rows) == 6  # 3 runs x 2 protocols
    assert ["onnxruntime cpu fp32 (unetpp-onnxruntime-20261122T080000Z)", "guide", "iou", "0.8369", "0.8385",
            "Ascend guide, om bs16", "-0.0016", "0.19%", "pass"] in rows
    assert ["torch cpu fp32", "upstream", "iou", "0.8400", "0.8420", "upstream README", "-0.0020", "0.24%",
            "pass"] in rows
    limited = [r for r in rows if r[0] == "onnxruntime cpu fp32 (unetpp-onnxruntime-limited)"]
    assert [r[3] for r in limited] == ["0.8123 (subset: 12 of 134)", "0.8400 (subset: 12 of 134)"]
    assert "weights sha256 db72943a49e5 (verified); dataset dsb2018 (val), 134 samples; full run" in md
    assert "LIMITED RUN (subset: 12 of 134)" in md


def test_markdown_perf_tables(results: Path, tmp_path: Path):
    md = write_report(results, tmp_path / "out")["markdown"].read_text()
    ort, torch, lim = ("onnxruntime cpu fp32 (unetpp-onnxruntime-20261122T080000Z)", "torch cpu fp32",
                       "onnxruntime cpu fp32 (unetpp-onnxruntime-limited)")
    infer = _table(md, "Throughput, inference only (runtime call on a resident batch) [samples/s]")
    # the fixture (schema 1.5) has no interval: the bare figure, as zoo.stats.figure writes it
    assert infer[0] == ["batch size", ort, torch, lim]
    by_bs = {r[0]: r[1:] for r in infer[2:]}
    assert list(by_bs) == ["1", "4", "16", "64", "best batch"]
    assert by_bs["1"] == ["25.0", "50.0", "25.0"]
    assert by_bs["4"] == ["26.7", "60.0", "26.7"]
    assert by_bs["64"] == ["failed [1]", "failed [2]", "failed [3]"]
    assert by_bs["best batch"] == ["28.1 (bs 16)", "60.0 (bs 4)", "28.1 (bs 16)"]
    # ratios between two runs: a table of their own, labelled across runs, over the first run
    ratios = _table(md, "Throughput ratio across runs, inference only (runtime call on a resident batch): "
                        f"each run / {ort}")
    assert ratios[0] == ["batch size", torch, lim]
    by_bs = {r[0]: r[1:] for r in ratios[2:]}
    assert list(by_bs) == ["1", "4", "16", "64", "best batch"]
    assert by_bs["1"] == ["2.00", "1.00"] and by_bs["4"] == ["2.25", "1.00"]      # 60 / 26.667
    assert by_bs["16"][0] == f"{30.0 / 28.07017543859649:.2f}" == "1.07"
    assert by_bs["64"] == ["—", "—"]
    assert by_bs["best batch"] == ["2.14", "1.00"]
    assert f"[1] {ort}, batch 64: out of memory (example)" in md
    assert "across runs: the ratio of two figures measured in different runs (not a speed-up" in md
    assert (f"{torch}: no confidence interval in this record (schema 1.5, before 1.11): its throughputs are "
            "shown without ±") in md

    pipe = _table(md, "Throughput, pipeline (read + preprocess + infer + postprocess over the dataset) [samples/s]")
    by_bs = {r[0]: r[1:] for r in pipe[2:]}
    assert list(by_bs) == ["1", "4", "16", "best batch"]
    assert by_bs["1"][:2] == ["23.8", "25.0"]
    assert by_bs["best batch"][:2] == ["26.7 (bs 16)", "30.0 (bs 4)"]
    ratios = _table(md, "Throughput ratio across runs, pipeline (read + preprocess + infer + postprocess over the "
                        f"dataset): each run / {ort}")
    assert ratios[2][:2] == ["1", f"{25.0 / 23.809523809523807:.2f}"]

    # latency per batch (a call) and per sample (over the batch size), each column saying which
    lat = _table(md, f"Latency per batch and per sample, {torch} [ms]")
    assert lat[0] == ["batch size", "scope", "mean ms/batch", "p50 ms/batch", "p90 ms/batch", "p99 ms/batch",
                      "max ms/batch", "p50 ms/sample", "p90 ms/sample", "p99 ms/sample", "calls"]
    assert ["1", "infer_only", "20.00", "39.60", "44.00", "47.20", "48.00", "39.60", "44.00", "47.20",
            "20"] in lat  # mean: 1000 * 1 / 50 per s
    assert ["16", "infer_only", "533.33", "564.30", "627.00", "672.60", "684.00", "35.27", "39.19", "42.04",
            "20"] in lat  # per sample: per batch / 16
    assert lat[-1][:3] == ["64", "infer_only", "failed [1]"]
    stages = _table(md, f"Pipeline stages, {torch} (share of summed stage time)")
    assert stages[0][-9:] == ["read %", "preprocess %", "infer %", "postprocess %", "pipeline/infer",
                              "infer CPU ms/sample", "other CPU ms/sample", "CPU ceiling/infer", "pipeline/ceiling"]
    assert stages[2] == ["1", "25.0", "2", "4.0%", "1.0%", "90.0%", "2.0%", "0.50"] + ["—"] * 4  # no CPU figures; pipeline 25 / infer 50
    # the export and runtime settings: a nested key: value list per run, not a JSON cell
    assert "- export: opset 17, checker full_check_passed, parity max_rel_diff 3.6e-05" in md
    assert "- settings\n  - intra_op_num_threads: 2\n  - graph_optimization_level: ORT_ENABLE_ALL\n" in md
    assert "  - providers: CPUExecutionProvider\n" in md
    assert f"**{torch}**\n\n- runtime: torch 1.31.1\n- precision: fp32\n" in md
    assert f"- result file: {results / 'b_torch.json'}\n" in md
    assert "![unetpp throughput vs batch size](unetpp_throughput.png)" in md


def test_html_is_self_contained_with_embedded_plots(results: Path, tmp_path: Path):
    other = _fixture()
    other["model"]["name"] = "unetpp_deep"
    _write(results, "d_other_model.json", other)
    written = write_report(results)  # default: next to the results
    assert written["html"] == results / "report.html"
    assert written["plots"] == [results / f"{m}_{kind}.png" for m in ("unetpp", "unetpp_deep")
                                for kind in ("throughput", "latency")]
    for png in written["plots"]:
        assert png.read_bytes().startswith(PNG_SIGNATURE)

    page = _Collector()
    page.feed(written["html"].read_text())
    # runs overview + per model: accuracy, infer_only, pipeline (with 3 runs, each with its across-runs
    # ratio table), and per run latency + stages
    assert page.tables == 1 + (3 + 2 + 3 * 2) + (3 + 1 * 2)
    assert len(page.imgs) == 4  # per model: throughput vs batch size, latency distribution
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(PNG_SIGNATURE)
    text = written["html"].read_text()
    assert "<link" not in text and "<script" not in text
    assert "Intel(R) Xeon(R) Processor @ 2.80GHz" in text and "&gt; 0.5" in text  # escaped description


def test_invalid_result_names_the_file(results: Path):
    bad = _fixture()
    bad["perf"][0]["throughput"] = -1.0
    _write(results, "z_bad.json", bad)
    with pytest.raises(ResultError, match=r"z_bad\.json"):
        write_report(results)


def test_a_json_list_beside_the_results_is_not_a_record(results: Path, tmp_path: Path):
    """Saved COCO detections (`<run_id>.predictions/detections.json`, a JSON list) are skipped; a
    truncated file still counts as a broken result and is named."""
    kept = results / "unetpp-onnxruntime-x.predictions"
    kept.mkdir()
    (kept / "detections.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                                                       "score": 0.5}]))
    assert write_report(results, tmp_path / "out")["markdown"].is_file()
    (results / "y_truncated.json").write_text('{"kind": "zoo.result", "perf": [')
    with pytest.raises(ResultError, match=r"y_truncated\.json: not valid JSON"):
        write_report(results, tmp_path / "out2")


def test_empty_folder_raises(tmp_path: Path, capsys):
    with pytest.raises(ResultError, match="no result files"):
        write_report(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "no result files" in capsys.readouterr().err


def test_cli_prints_written_paths(results: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli"
    assert main([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "report.md"), str(out / "report.html"), str(out / "report.csv"),
                       str(out / "unetpp_throughput.png"), str(out / "unetpp_latency.png")]
    assert all(Path(p).is_file() for p in printed)
    # --csv: the CSV elsewhere, the page's link relative to it
    elsewhere = tmp_path / "tables" / "runs.csv"
    assert main([str(results), "--out", str(out), "--csv", str(elsewhere)]) == 0
    assert str(elsewhere) in capsys.readouterr().out.split() and elsewhere.is_file()
    assert '<a href="../tables/runs.csv">' in (out / "report.html").read_text()


def test_cost_and_stability_table_from_schema_1_2_fields(tmp_path: Path):
    rec = _fixture()
    rec["schema_version"] = "1.2"
    rec["export"]["cost"] = {"flops_per_sample": 9_700_000_000, "params": 9_000_000, "counted": "Conv"}
    rec["device"]["fp32_peak"] = {"gflops": 200.0, "method": "torch.mm 2048x2048 fp32, best of 7", "threads": 2}
    for p in rec["perf"]:
        if p["scope"] == "infer_only" and p["status"] == "ok":
            p["gflops"] = 9.7 * p["throughput"]
            p["peak_fraction"] = p["gflops"] / 200.0
            p["stopped_by"] = "stable"
            p["stability"] = {"window": 5, "windows": 3, "tolerance": 0.05, "stable": True,
                              "window_means_ms": [40.0, 40.4, 39.9], "spread": 0.0125}
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", rec)
    md = write_report(folder)["markdown"].read_text()
    assert "Cost and stability, onnxruntime" in md
    # 9.7 GFLOP x 25/s vs a 200 GFLOP/s peak; a 1.2 record's window spread, labelled as such (no interval)
    assert "| 1 | 25.0 (spread 1.2%) | 242.5 | — | 121.2% | — | — | stable | 3 | 1.2% | yes |" in md
    assert "9.70 GFLOP and 9.00 M parameters per sample" in md and "fp32 peak 200 GFLOP/s" in md

    # 1.3: the peak measured again before each batch size (shown); fractions use the highest
    rec["schema_version"] = "1.3"
    rec["device"]["fp32_peak"]["measurements"] = [200.0, 250.0, 180.0]
    rec["device"]["fp32_peak"]["gflops"] = 250.0
    for p in rec["perf"]:
        if p["scope"] == "infer_only" and p["status"] == "ok":
            p["peak_fraction"] = p["gflops"] / 250.0
            if p["batch_size"] == 1:
                p["peak_gflops"] = 180.0
    _write(folder, "a.json", rec)
    md = write_report(folder)["markdown"].read_text()
    assert "| 1 | 25.0 (spread 1.2%) | 242.5 | 180 | 97.0% |" in md
    assert "measured 180-250 in this run: the highest is the peak" in md


def _rendered_table(tmp_path: Path, rec: dict, title_start: str) -> tuple[str, list[list[str]]]:
    """The Markdown report of one record and the rows of its first table titled `title_start`..."""
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", rec)
    md = write_report(folder, tmp_path / "out")["markdown"].read_text()
    title = next(line for line in md.splitlines() if line.startswith(f"**{title_start}"))
    return md, _table(md, title.strip("*"))


def test_stage_table_shows_the_cpu_ceiling(tmp_path: Path):
    rec = _fixture()
    pipe = next(p for p in rec["perf"] if p["scope"] == "pipeline" and p["status"] == "ok")
    pipe["cpu"] = {"process_s": 3.0, "stages_s": {"read": 0.4, "preprocess": 0.1, "postprocess": 0.2},
                   "ceiling": {"cores": 2, "infer_cpu_s_per_sample": 0.0804, "other_cpu_s_per_sample": 0.0171,
                               "throughput": 20.5, "vs_infer": 0.82, "pipeline_vs_ceiling": 0.9756}}
    md, stages = _rendered_table(tmp_path, rec, "Pipeline stages")
    row = next(r for r in stages[2:] if r[0] == str(pipe["batch_size"]))
    assert row[-4:] == ["80.4", "17.1", "0.82", "0.98"]
    assert "overlapping cannot reach the infer-only rate" in md


def test_operator_profile_table(tmp_path: Path):
    rec = _fixture()
    block = next(p for p in rec["perf"] if p["scope"] == "infer_only" and p["status"] == "ok")
    block["op_profile"] = {"calls": 3, "total_ms_per_call": 100.0, "ops": [
        {"op_type": "Conv", "ms_per_call": 80.0, "share": 0.8, "kernels_per_call": 40.0, "gflops": 201.4},
        {"op_type": "ReorderInput", "ms_per_call": 20.0, "share": 0.2, "kernels_per_call": 2.0}]}
    _, rows = _rendered_table(tmp_path, rec, "Operator profile")
    assert rows[0] == ["batch size", "operator", "ms", "share", "kernels", "GFLOP/s"]
    bs = str(block["batch_size"])
    assert rows[2:] == [[bs, "Conv", "80.00", "80.0%", "40.0", "201"], [bs, "ReorderInput", "20.00", "20.0%", "2.0", "—"]]
    # without --profile there is no such table
    plain = tmp_path / "p"
    plain.mkdir()
    _write(plain, "a.json", _fixture())
    assert "Operator profile" not in write_report(plain, tmp_path / "out2")["markdown"].read_text()


def test_provenance_says_how_the_weights_were_checked(tmp_path: Path):
    """A sha256-prefix-only check (schema 1.5 `checks`) is named as such; an old record without
    `checks` and an unverified one still read."""
    prefix = _fixture()
    prefix["provenance"]["weights"].update(expected_sha256=None, checks=[
        {"kind": "sha256-prefix", "value": "db72943a", "source": "file-name"}])
    for sub in "pon":
        (tmp_path / sub).mkdir()
    md, _ = _rendered_table(tmp_path / "p", prefix, "Accuracy vs reference")
    assert "weights sha256 db72943a49e5 (verified by sha256 prefix db72943a only); dataset" in md
    old = _fixture()
    old["schema_version"] = "1.4"
    del old["provenance"]["weights"]["checks"]
    md, _ = _rendered_table(tmp_path / "o", old, "Accuracy vs reference")
    assert "weights sha256 db72943a49e5 (verified); dataset" in md
    none = _fixture()
    none["provenance"]["weights"].update(expected_sha256=None, checks=[], verified=False)
    md, _ = _rendered_table(tmp_path / "n", none, "Accuracy vs reference")
    assert "weights sha256 db72943a49e5 (not verified: no expected checksum); dataset" in md


# ---------------------------------------------------------------- precision (schema 1.7)

def _precision_run(precision: str, scale: float, in_run: bool, fidelity: float = 0.998) -> dict:
    """The onnxruntime fixture at `precision`: every throughput x `scale`, accuracy 0.002 lower,
    the own precision's GEMM peak, and (in_run) the reduced_precision block of zoo/stages/fp32_baseline.py
    with an fp32 pass timed at 20/s (bs 1) in the same run."""
    rec = _fixture()
    rec.update(schema_version="1.7", precision=precision, run_id=f"unetpp-onnxruntime-{precision}")
    rec["device"]["precision_peak"] = {"precision": precision, "gflops": 800.0, "threads": 2, "n": 2048,
                                       "kernel": f"a {precision} kernel", "method": "m",
                                       "measurements": [790.0, 800.0]}
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["throughput"] *= scale
            if p["scope"] == "infer_only":
                p["gflops"] = 10.0 * p["throughput"]
                p["peak_fraction"] = p["gflops"] / 800.0
    for acc in rec["accuracy"]:
        acc["value"] = round(acc["value"] - 0.002, 6)
    if in_run:
        delta = [{"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": a["value"] + 0.001,
                  "delta": -0.001, "relative_drop": 0.001 / (a["value"] + 0.001), "passed": True}
                 for a in rec["accuracy"]]
        rec["reduced_precision"] = {
            "requested": precision, "executed": precision, "calibration": None,
            "fp32_baseline": {"runtime": "onnxruntime 1.31.1 (fp32)", "batch_size": 1, "throughput_samples_per_s": 20.0,
                              "accuracy": [{"name": d["name"], "metric": d["metric"], "value": d["fp32"]} for d in delta]},
            "delta": delta, "tolerance": 0.01,
            "fidelity": [{"metric": "fidelity_iou", "value": fidelity, "description": "IoU vs fp32 masks",
                          "num_samples": 134, "per_key": [{"key": "mask", "metric": "fidelity_iou", "value": fidelity}]}],
            "criterion": "accuracy_delta", "trained_weights": True, "passed": True}
    return rec


@pytest.fixture
def precision_results(tmp_path: Path) -> Path:
    folder = tmp_path / "precision"
    folder.mkdir()
    _write(folder, "a_fp32.json", _fixture())                       # infer 25.0 / 26.67 / 28.07
    _write(folder, "b_int8.json", _precision_run("int8", 2.0, in_run=True))
    _write(folder, "c_bf16.json", _precision_run("bf16", 1.5, in_run=False))
    return folder


def test_precision_table_rows_speedup_delta_and_peak(precision_results: Path, tmp_path: Path):
    written = write_report(precision_results, tmp_path / "out")
    md = written["markdown"].read_text()
    rows = _table(md, "Precision: throughput, speed-up over fp32, accuracy")
    assert rows[0][:8] == ["run", "precision", "batch size", "infer [samples/s]", "pipeline [samples/s]",
                           "speed-up vs fp32", "x fp32 run, infer (across runs)", "x fp32 run, pipeline (across runs)"]
    data = rows[2:]
    # runtime x precision (fp32, bf16, int8) x batch size (1, 4, 16, 64); the run labels of every table
    assert [(r[0], r[1], r[2]) for r in data] == [(f"onnxruntime cpu {p}", p, bs) for p in ("fp32", "bf16", "int8")
                                                   for bs in ("1", "4", "16", "64")]
    by = {(r[1], r[2]): r for r in data}
    assert by[("fp32", "1")][5:8] == ["—", "base", "base"]
    # speed-up: a 1.7 record's own fp32 pass (50/s over its 20/s), timed after its figures: not interleaved;
    # the ratios to the fp32 run of the result set are across runs, per batch size (no intervals: no ±)
    assert by[("int8", "1")][3:8] == ["50.0", "47.6", "2.50 (not interleaved)", "2.00", "2.00"]
    assert by[("int8", "4")][5:8] == ["—", "2.00", "2.00"]
    assert by[("bf16", "16")][3] == "42.1" and by[("bf16", "16")][6] == "1.50"
    assert by[("bf16", "1")][5] == "—"  # no fp32 pass of its own: no speed-up, only the across-runs ratio
    assert by[("int8", "64")][3:7] == ["failed", "—", "—", "—"] and by[("fp32", "64")][3:7] == ["failed", "—", "—", "—"]
    # delta: the run's own fp32 pass (-0.001) for int8; computed from the fp32 record (-0.002) for bf16
    assert by[("int8", "1")][8] == "guide -0.0010 (0.12% drop); upstream -0.0010 (0.12% drop)"
    assert by[("bf16", "1")][8] == "guide -0.0020 (0.24% drop); upstream -0.0020 (0.24% drop)"
    assert by[("int8", "1")][9] == "fidelity_iou 0.9980" and by[("bf16", "1")][9] == "—"
    assert by[("int8", "1")][11] == "pass (accuracy_delta)" and by[("bf16", "1")][11] == "pass (accuracy delta, result set)"
    assert by[("int8", "4")][8] == "—"  # accuracy: on the row of its batch size only
    # of the precision's own peak: 10 GFLOP x 50/s over 800
    assert by[("int8", "1")][10] == "62.5% of int8"
    assert "int8 peak 800 GOP/s (a int8 kernel)" in md and "bf16 peak 800 GFLOP/s (a bf16 kernel)" in md
    # the plot is written and embedded
    plot = tmp_path / "out" / "unetpp_precision.png"
    assert plot in written["plots"] and plot.read_bytes().startswith(PNG_SIGNATURE)
    assert "![unetpp accuracy vs throughput](unetpp_precision.png)" in md
    html = written["html"].read_text()
    assert html.count("data:image/png;base64,") == 3  # throughput, latency, precision


def test_precision_delta_fails_beyond_the_tolerance_and_needs_the_same_samples(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _fixture())
    bf16 = _precision_run("bf16", 1.5, in_run=False)
    bf16["accuracy"][0]["value"] = 0.80  # guide 0.8369 -> 0.80: 4.4% drop > 1%
    _write(folder, "b.json", bf16)
    md = write_report(folder, tmp_path / "o1")["markdown"].read_text()
    by = {(r[1], r[2]): r for r in _table(md, "Precision: throughput, speed-up over fp32, accuracy")[2:]}
    assert by[("bf16", "1")][8].startswith("guide -0.0369 (4.41% drop)")
    assert by[("bf16", "1")][11] == "FAIL (accuracy delta, result set)"

    bf16["provenance"]["dataset"]["num_samples"] = 12  # another sample set: no subtraction
    bf16["provenance"]["dataset"]["limit"] = 12
    _write(folder, "b.json", bf16)
    md = write_report(folder, tmp_path / "o2")["markdown"].read_text()
    by = {(r[1], r[2]): r for r in _table(md, "Precision: throughput, speed-up over fp32, accuracy")[2:]}
    assert by[("bf16", "1")][8] == "—" and by[("bf16", "1")][6] == "1.50"
    assert "the fp32 run used other weights or samples: no accuracy delta" in md


def test_no_precision_section_for_fp32_only(results: Path, tmp_path: Path):
    written = write_report(results, tmp_path / "out")
    md = written["markdown"].read_text()
    assert "### Precision" not in md and not (tmp_path / "out" / "unetpp_precision.png").exists()


def _sharded_run() -> dict:
    """The fixture as a run over 2 shards (a schema 1.8 sharding block)."""
    sharded = _fixture()
    sharded["run_id"] = "unetpp-onnxruntime-sharded"
    shard = {"index": 0, "num_samples": 8, "first_id": "a", "last_id": "b", "ids_sha256": "0" * 64, "node_id": "n1",
             "node_address": "127.0.0.1", "pid": 1, "threads": 1, "ray_ids": [], "environment": {},
             "precision": "fp32", "retried": False}
    sharded["sharding"] = {"count": 2, "cluster": {"mode": "local", "address": None, "ray_version": "2.60.0",
                                                   "nodes": [{"node_id": "n1", "address": "127.0.0.1",
                                                              "resources": {"CPU": 2.0}}]},
                           "resource": "CPU", "devices": None, "threads_per_shard": 1, "startup_s": 1.0,
                           "shards": [shard, {**shard, "index": 1}], "retries": [], "scaling": None, "merge": "replay"}
    return sharded


def test_a_sharded_run_is_labelled_with_its_shards(tmp_path: Path):
    """A run with a (schema 1.8) sharding block is told apart from the same runtime's single run."""
    folder = tmp_path / "results"
    folder.mkdir()
    _write(folder, "a_single.json", _fixture())
    _write(folder, "b_sharded.json", _sharded_run())
    md = write_report(folder, tmp_path / "out")["markdown"].read_text()
    infer = _table(md, "Throughput, inference only (runtime call on a resident batch) [samples/s]")
    assert infer[0][1:3] == ["onnxruntime cpu fp32", "onnxruntime cpu fp32 x2 shards"]
    assert "- shards: 2" in md


# ---------------------------------------------------------------- uncertainty (schema 1.11)

def _interval(tp: float, half: float | None, tol: float = 0.02, windows: int = 12, reason: str | None = None) -> dict:
    """A perf block's `interval` as zoo.stats writes it, around throughput `tp`."""
    return {"method": "student-t over window means", "confidence": 0.95, "window_calls": 5, "windows": windows,
            "window_throughputs": [tp] * windows, "median": tp,
            "low": None if half is None else tp / (1 + half), "high": None if half is None else tp / (1 - half),
            "half_width": half, "tolerance": tol, "stable": half is not None and half <= tol, "reason": reason}


def _with_intervals(rec: dict, half: float = 0.011, tol: float = 0.02) -> dict:
    """rec as a 1.11 record: every ok block's throughput with an interval of +-`half` (stable
    when within `tol`)."""
    rec["schema_version"] = "1.11"
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["interval"] = _interval(p["throughput"], half, tol)
    return rec


def _block(rec: dict, scope: str, bs: int) -> dict:
    return next(p for p in rec["perf"] if p["scope"] == scope and p["batch_size"] == bs)


def _unstable_run() -> dict:
    """The fixture at 1.11: bs1 infer-only stopped by its time budget at +-7.1% (tolerance 2%),
    bs16 pipeline over 2 windows only (no interval); everything else +-1.1%."""
    rec = _with_intervals(_fixture())
    infer1 = _block(rec, "infer_only", 1)
    infer1["interval"] = _interval(infer1["throughput"], 0.071, reason="time budget reached at +-7.1%")
    pipe16 = _block(rec, "pipeline", 16)
    pipe16["interval"] = _interval(pipe16["throughput"], None, windows=2,
                                   reason="2 windows: too few for an interval (at least 3)")
    return rec


def test_an_unstable_figure_is_badged_in_tables_summary_and_html(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _unstable_run())
    written = write_report(folder, tmp_path / "out")
    md = written["markdown"].read_text()
    infer = {r[0]: r[1] for r in _table(md, "Throughput, inference only (runtime call on a resident batch) "
                                            "[samples/s]")[2:]}
    # the terminal's text (zoo.stats.figure): UNSTABLE last
    assert infer["1"] == "25.0 ±7.1% UNSTABLE" and infer["4"] == "26.7 ±1.1%" and infer["16"] == "28.1 ±1.1%"
    assert infer["best batch"] == "28.1 ±1.1% (bs 16)"
    pipe = {r[0]: r[1] for r in _table(md, "Throughput, pipeline (read + preprocess + infer + postprocess over the "
                                           "dataset) [samples/s]")[2:]}
    assert pipe["16"] == "26.7 ±? (2 windows) UNSTABLE" and pipe["4"] == "25.4 ±1.1%"
    # the run's summary lists each unstable figure with its reason; the overview says UNSTABLE
    assert ("> **onnxruntime cpu fp32: UNSTABLE: bs1 infer ±7.1%: time budget reached at +-7.1%; "
            "bs16 pipeline ±?: 2 windows: too few for an interval (at least 3)**") in md
    overview = _table(md, "Runs")
    assert overview[0][6] == "speed figures" and overview[2][6] == "UNSTABLE"
    # the cost and stability table reads the interval: windows, stable, the reason
    cost = {r[0]: r for r in _table(md, "Cost and stability, onnxruntime cpu fp32")[2:]}
    assert cost["1"][1] == "25.0 ±7.1% UNSTABLE" and cost["1"][8:] == ["12", "—", UNSTABLE]
    assert cost["4"][8:] == ["12", "—", "yes"]
    assert "batch 1 UNSTABLE: time budget reached at +-7.1%" in md
    assert "no confidence interval in this record" not in md

    page = written["html"].read_text()
    assert '<td class="n">25.0 ±7.1% <span class="badge UNSTABLE">UNSTABLE</span></td>' in page
    assert '<td><span class="badge UNSTABLE">UNSTABLE</span></td>' in page  # overview and cost table
    assert "UNSTABLE: bs1 infer ±7.1%" in page


UNSTABLE = "UNSTABLE"


def test_a_stable_run_has_no_badge(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _with_intervals(_fixture()))
    md = write_report(folder, tmp_path / "out")["markdown"].read_text()
    cells = [line for line in md.splitlines() if line.startswith("|")]
    assert cells and not any(UNSTABLE in line for line in cells) and "UNSTABLE:" not in md
    assert _table(md, "Runs")[2][6] == "stable (95% CI)"
    cost = _table(md, "Cost and stability, onnxruntime cpu fp32")
    assert [r[-1] for r in cost[2:]] == ["yes", "yes", "yes"]


def test_plots_mark_unstable_points_and_draw_intervals():
    from runner import report

    rec = _unstable_run()
    fig = report._throughput_figure([rec], ["ort"], "t")
    ax = fig.axes[0]
    # the unstable points are ringed, the legend says what a ring means
    rings = [line for line in ax.lines if line.get_label().startswith(UNSTABLE)]
    assert len(rings) == 1 and rings[0].get_label() == "UNSTABLE (ringed): interval not within its tolerance"
    marks = list(zip(rings[0].get_xdata(), rings[0].get_ydata()))
    assert marks == [(1, 25.0), (16, _block(rec, "pipeline", 16)["throughput"])]
    assert rings[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.containers  # error bars: the 95% intervals
    # latency: one horizontal row per run and batch size, per sample (the axis says so), from 0
    ax = report._latency_figure([rec], ["ort"], "t").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ort, bs 1 UNSTABLE", "ort, bs 4", "ort, bs 16"]
    assert ax.get_xlabel() == "latency per sample [ms] (one call's latency / batch size)" and ax.get_xlim()[0] == 0
    p50 = [line.get_xdata()[0] for line in ax.lines if line.get_marker() == "o"]
    assert p50 == pytest.approx([_block(rec, "infer_only", bs)["latency_ms"]["median"] / bs for bs in (1, 4, 16)])
    # a stable run: no mark
    fig = report._throughput_figure([_with_intervals(_fixture())], ["ort"], "t")
    assert not [line for line in fig.axes[0].lines if line.get_label().startswith(UNSTABLE)]


def test_ratios_across_runs_add_both_half_widths_in_quadrature(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _with_intervals(_fixture(), half=0.04, tol=0.05))
    _write(folder, "b.json", _with_intervals(_torch_run(), half=0.03, tol=0.05))
    md = write_report(folder, tmp_path / "out")["markdown"].read_text()
    infer = _table(md, "Throughput, inference only (runtime call on a resident batch) [samples/s]")
    ratio_title = ("Throughput ratio across runs, inference only (runtime call on a resident batch): "
                   "each run / onnxruntime cpu fp32")
    ratios = _table(md, ratio_title)
    assert ratios[0] == ["batch size", "torch cpu fp32"]
    by_bs = {r[0]: r[1:] + ratios_r[1:] for r, ratios_r in zip(infer[2:], ratios[2:])}
    assert by_bs["1"] == ["25.0 ±4.0%", "50.0 ±3.0%", "2.00 ±5.0%"]  # sqrt(4^2 + 3^2)
    assert by_bs["best batch"] == ["28.1 ±4.0% (bs 16)", "60.0 ±3.0% (bs 4)", "2.14 ±5.0%"]
    assert "relative half-widths added in quadrature" in md
    # one side without an interval: the ratio's uncertainty is unknown, never made up
    _write(folder, "b.json", _torch_run())
    md = write_report(folder, tmp_path / "out2")["markdown"].read_text()
    by_bs = {r[0]: r[1:] for r in _table(md, "Throughput, inference only (runtime call on a resident batch) "
                                             "[samples/s]")[2:]}
    assert by_bs["1"] == ["25.0 ±4.0%", "50.0"]
    assert _table(md, ratio_title)[2] == ["1", "2.00"]


def _interleaved(rec: dict, speedup: float, half: float | None, stable: bool) -> dict:
    """rec (a reduced-precision run) at 1.11: intervals on its figures and an interleaved speed-up."""
    _with_intervals(rec)
    rec["reduced_precision"]["fp32_baseline"].update(speedup=speedup, speedup_interval={
        "low": None if half is None else speedup / (1 + half), "high": None if half is None else speedup / (1 - half),
        "half_width": half, "rounds": 6, "stable": stable, "method": "interleaved windows, t over the rounds' ratios"})
    return rec


def test_precision_table_shows_the_interleaved_speedup_with_its_interval(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a_fp32.json", _with_intervals(_fixture()))
    _write(folder, "b_int8.json", _interleaved(_precision_run("int8", 2.0, in_run=True), 2.38, 0.02, True))
    old = _precision_run("bf16", 1.5, in_run=True)  # 1.10: a speedup of its own, not interleaved
    old["schema_version"] = "1.10"
    old["reduced_precision"]["fp32_baseline"]["speedup"] = 37.5 / 20.0
    _write(folder, "c_bf16.json", old)
    md = write_report(folder, tmp_path / "out")["markdown"].read_text()
    rows = _table(md, "Precision: throughput, speed-up over fp32, accuracy")
    assert [h for h in rows[0] if "speed-up" in h] == ["speed-up vs fp32"]  # one definition, one column
    assert [h for h in rows[0] if "across runs" in h] == ["x fp32 run, infer (across runs)",
                                                          "x fp32 run, pipeline (across runs)"]
    by = {(r[1], r[2]): r for r in rows[2:]}
    # the record's interleaved figure (2.38), not the ratio of the two runs' figures (2.00)
    assert by[("int8", "1")][3:8] == ["50.0 ±1.1%", "47.6 ±1.1%", "2.38 ±2.0% (2.33-2.43)", "2.00 ±1.6%",
                                      "2.00 ±1.6%"]
    assert by[("int8", "4")][5] == "—"  # the speed-up is at the baseline's batch size only
    assert by[("bf16", "1")][5:7] == ["1.88 (not interleaved)", "1.50"]
    assert "onnxruntime cpu int8: speed-up vs fp32 over 6 interleaved rounds" in md
    assert "UNSTABLE:" not in md


def test_an_unstable_speedup_is_badged(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _interleaved(_precision_run("int8", 2.0, in_run=True), 2.38, 0.06, False))
    written = write_report(folder, tmp_path / "out")
    md = written["markdown"].read_text()
    by = {(r[1], r[2]): r for r in _table(md, "Precision: throughput, speed-up over fp32, accuracy")[2:]}
    assert by[("int8", "1")][5] == "2.38 ±6.0% (2.25-2.53) UNSTABLE"
    assert "> **onnxruntime cpu int8: UNSTABLE: speed-up vs fp32 (bs 1) ±6.0%**" in md
    assert '<td class="n">2.38 ±6.0% (2.25-2.53) <span class="badge UNSTABLE">UNSTABLE</span></td>' in \
        written["html"].read_text()


def test_an_old_record_with_a_stability_block_renders(tmp_path: Path):
    """Before 1.11: no interval, the stop-when-stable windows' spread shown as a spread; an
    unstable one is badged all the same; a record with neither shows ±?."""
    rec = _fixture()
    rec["schema_version"] = "1.9"
    for p in rec["perf"]:
        if p["scope"] == "infer_only" and p["status"] == "ok":
            p["stopped_by"] = "stable" if p["batch_size"] != 1 else "time_budget"
            p["stability"] = {"window": 5, "windows": 3, "tolerance": 0.05, "stable": p["batch_size"] != 1,
                              "window_means_ms": [40.0, 44.0, 36.0], "spread": 0.2 if p["batch_size"] == 1 else 0.012}
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", rec)
    written = write_report(folder, tmp_path / "out")
    md = written["markdown"].read_text()
    infer = {r[0]: r[1] for r in _table(md, "Throughput, inference only (runtime call on a resident batch) "
                                            "[samples/s]")[2:]}
    assert infer["1"] == "25.0 (spread 20.0%) UNSTABLE" and infer["4"] == "26.7 (spread 1.2%)"
    pipe = {r[0]: r[1] for r in _table(md, "Throughput, pipeline (read + preprocess + infer + postprocess over the "
                                           "dataset) [samples/s]")[2:]}
    assert pipe["1"] == "23.8"
    assert "UNSTABLE: bs1 infer (spread 20.0%): window means not within 5.0% of their average" in md
    assert ("no confidence interval in this record (schema 1.9, before 1.11): its throughputs are shown without ± or "
            "with the window spread of its stop-when-stable timing") in md
    cost = {r[0]: r for r in _table(md, "Cost and stability, onnxruntime cpu fp32")[2:]}
    assert cost["1"][7:] == ["time_budget", "3", "20.0%", UNSTABLE] and cost["4"][7:] == ["stable", "3", "1.2%", "yes"]
    assert _table(md, "Runs")[2][6] == UNSTABLE
    assert written["html"].read_text().count('<span class="badge UNSTABLE">UNSTABLE</span>') >= 3


# ---------------------------------------------------------------- CSV, settings lists, plots' axes

def test_csv_has_one_row_per_run_batch_size_and_scope(tmp_path: Path):
    import csv

    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", _unstable_run())
    _write(folder, "b.json", _sharded_run())
    written = write_report(folder, tmp_path / "out")
    assert written["csv"] == tmp_path / "out" / "report.csv"
    rows = list(csv.DictReader(written["csv"].open()))
    assert list(rows[0]) == ["model", "run_id", "run_status", "runtime", "runtime_version", "precision", "shards",
                             "device_type", "device", "isa", "batch_size", "scope", "status",
                             "throughput_samples_per_s", "interval_low", "interval_high", "interval_half_width",
                             "stable", "latency_p50_ms_per_batch", "latency_p90_ms_per_batch",
                             "latency_p99_ms_per_batch", "latency_p50_ms_per_sample", "latency_p90_ms_per_sample",
                             "latency_p99_ms_per_sample", "accuracy_protocol", "accuracy_metric", "accuracy_value",
                             "accuracy_published", "error", "file"]
    # 7 perf blocks per record (bs 1, 4, 16 x 2 scopes, bs 64 infer_only failed)
    assert len(rows) == 2 * 7
    by = {(r["run_id"], r["batch_size"], r["scope"]): r for r in rows}
    rec = _unstable_run()
    infer1 = by[(rec["run_id"], "1", "infer_only")]
    block = _block(rec, "infer_only", 1)
    assert infer1["throughput_samples_per_s"] == "25.0" and infer1["stable"] == "false"
    assert float(infer1["interval_half_width"]) == 0.071
    assert float(infer1["interval_low"]) == pytest.approx(block["interval"]["low"], abs=1e-6)
    assert float(infer1["interval_high"]) == pytest.approx(block["interval"]["high"], abs=1e-6)
    assert infer1["file"] == str(folder / "a.json") and infer1["shards"] == "1" and infer1["precision"] == "fp32"
    assert (infer1["accuracy_protocol"], infer1["accuracy_metric"], infer1["accuracy_published"]) == \
        ("guide", "iou", "0.8385")
    infer16 = by[(rec["run_id"], "16", "infer_only")]
    p50 = _block(rec, "infer_only", 16)["latency_ms"]["median"]
    assert float(infer16["latency_p50_ms_per_batch"]) == pytest.approx(p50)
    assert float(infer16["latency_p50_ms_per_sample"]) == pytest.approx(p50 / 16, abs=1e-6)
    pipe16 = by[(rec["run_id"], "16", "pipeline")]
    assert pipe16["interval_half_width"] == "" and pipe16["stable"] == "false"  # 2 windows: no interval
    failed = by[(rec["run_id"], "64", "infer_only")]
    assert failed["status"] == "failed" and failed["throughput_samples_per_s"] == "" and failed["error"]
    assert by[("unetpp-onnxruntime-sharded", "1", "infer_only")]["shards"] == "2"
    # the page links to it
    assert '<a href="report.csv">report.csv</a>' in written["html"].read_text()
    assert "[report.csv](report.csv)" in written["markdown"].read_text()


def test_settings_are_a_nested_list_in_html(tmp_path: Path):
    rec = _fixture()
    rec["runtime"]["settings"] = {"threads": 2, "config": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1},
                                  "artifact": "/a/very/long/path/" + "x" * 150, "kept_fp32": [], "cached": False}
    rec["error"] = None
    rec["accuracy"][0]["description"] = "<b>bold</b> & more"  # text from a record is escaped
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder, "a.json", rec)
    written = write_report(folder, tmp_path / "out")
    page = written["html"].read_text()
    assert ('<li><span class="k">config</span><ul>\n<li><span class="k">PERFORMANCE_HINT</span>: LATENCY</li>\n'
            '<li><span class="k">NUM_STREAMS</span>: 1</li>\n</ul></li>') in page
    assert '<li><span class="k">kept_fp32</span>: none</li>' in page
    assert '<li><span class="k">cached</span>: no</li>' in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in page and "<b>bold</b>" not in page
    md = written["markdown"].read_text()
    assert "- settings\n  - threads: 2\n  - config\n    - PERFORMANCE_HINT: LATENCY\n    - NUM_STREAMS: 1\n" in md


def test_plot_labels_carry_precision_and_shards_and_the_accuracy_axis_does_not_exaggerate():
    from runner import report

    fp32, int8, sharded = _fixture(), _precision_run("int8", 2.0, in_run=True), _sharded_run()
    runs = [restated(fp32), restated(int8), restated(sharded)]
    labels = report._labels(runs)
    assert labels == ["onnxruntime cpu fp32", "onnxruntime cpu int8", "onnxruntime cpu fp32 x2 shards"]
    ax = report._throughput_figure(runs, labels, "t").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()][2:6] == [
        "onnxruntime cpu int8, infer only", "onnxruntime cpu int8, pipeline",
        "onnxruntime cpu fp32 x2 shards, infer only", "onnxruntime cpu fp32 x2 shards, pipeline"]
    assert ax.get_ylabel() == "throughput [samples/s]" and ax.get_ylim()[0] == 0

    ax = report._precision_figure(runs, labels, "t").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    # each point by its run label, batch size, value and its delta to fp32 (the run's own fp32 pass)
    assert legend[1] == "onnxruntime cpu int8 (bs 16): 0.8349, -0.0010 vs fp32"  # its best batch
    assert legend[-1] == "published 0.8385"
    # the axis spans the points and the published value with 3 points below, not 0.835-0.837
    low, high = ax.get_ylim()
    assert low == pytest.approx(0.8349 - 0.03) and high == pytest.approx(0.8385 + 0.01)
    assert ax.get_xlabel() == "throughput at the best batch size, infer only [samples/s]"

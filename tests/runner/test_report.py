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

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TORCH_INFER = {1: 50.0, 4: 60.0, 16: 30.0}  # fixture onnxruntime: 25.0, 26.67, 28.07 (bs 64 failed)


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def _write(folder: Path, name: str, record: dict) -> None:
    (folder / name).write_text(json.dumps(record, indent=1))


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
    assert ["onnxruntime cpu (unetpp-onnxruntime-20261122T080000Z)", "guide", "iou", "0.8369", "0.8385",
            "Ascend guide, om bs16", "-0.0016", "0.19%", "pass"] in rows
    assert ["torch cpu", "upstream", "iou", "0.8400", "0.8420", "upstream README", "-0.0020", "0.24%",
            "pass"] in rows
    limited = [r for r in rows if r[0] == "onnxruntime cpu (unetpp-onnxruntime-limited)"]
    assert [r[3] for r in limited] == ["0.8123 (subset: 12 of 134)", "0.8400 (subset: 12 of 134)"]
    assert "weights sha256 db72943a49e5 (verified); dataset dsb2018 (val), 134 samples; full run" in md
    assert "LIMITED RUN (subset: 12 of 134)" in md


def test_markdown_perf_tables(results: Path, tmp_path: Path):
    md = write_report(results, tmp_path / "out")["markdown"].read_text()
    ort, torch, lim = ("onnxruntime cpu (unetpp-onnxruntime-20261122T080000Z)", "torch cpu",
                       "onnxruntime cpu (unetpp-onnxruntime-limited)")
    infer = _table(md, "Throughput, inference only (runtime call on a resident batch) [samples/s]")
    assert infer[0] == ["batch size", ort, torch, lim, f"{torch}/{ort}", f"{lim}/{ort}"]
    by_bs = {r[0]: r[1:] for r in infer[2:]}
    assert list(by_bs) == ["1", "4", "16", "64", "best batch"]
    assert by_bs["1"] == ["25.0", "50.0", "25.0", "2.00", "1.00"]
    assert by_bs["4"] == ["26.7", "60.0", "26.7", "2.25", "1.00"]      # 60 / 26.667
    assert by_bs["16"][3] == f"{30.0 / 28.07017543859649:.2f}" == "1.07"
    assert by_bs["64"][:3] == ["failed [1]", "failed [2]", "failed [3]"]
    assert by_bs["64"][3:] == ["—", "—"]
    assert by_bs["best batch"] == ["28.1 (bs 16)", "60.0 (bs 4)", "28.1 (bs 16)", "2.14", "1.00"]
    assert f"[1] {ort}, batch 64: out of memory (example)" in md

    pipe = _table(md, "Throughput, pipeline (read + preprocess + infer + postprocess over the dataset) [samples/s]")
    by_bs = {r[0]: r[1:] for r in pipe[2:]}
    assert list(by_bs) == ["1", "4", "16", "best batch"]
    assert by_bs["1"][:2] == ["23.8", "25.0"] and by_bs["1"][3] == f"{25.0 / 23.809523809523807:.2f}"
    assert by_bs["best batch"][:2] == ["26.7 (bs 16)", "30.0 (bs 4)"]

    lat = _table(md, f"Latency per batch, {torch} [ms]")
    assert ["1", "infer_only", "40.00", "39.60", "44.00", "47.20", "48.00", "20"] in lat
    assert lat[-1][:3] == ["64", "infer_only", "failed [1]"]
    stages = _table(md, f"Pipeline stages, {torch} (share of summed stage time)")
    assert stages[0][-5:] == ["read %", "preprocess %", "infer %", "postprocess %", "pipeline/infer"]
    assert stages[2] == ["1", "25.0", "2", "4.0%", "1.0%", "90.0%", "2.0%", "0.95"]
    assert "export opset 17, checker full_check_passed, parity max_rel_diff 3.6e-05" in md
    assert "settings: intra_op_num_threads=2, graph_optimization_level=ORT_ENABLE_ALL" in md
    assert "![unetpp throughput vs batch size](unetpp_throughput.png)" in md


def test_html_is_self_contained_with_embedded_plots(results: Path, tmp_path: Path):
    other = _fixture()
    other["model"]["name"] = "unetpp_deep"
    _write(results, "d_other_model.json", other)
    written = write_report(results)  # default: next to the results
    assert written["html"] == results / "report.html"
    assert written["plots"] == [results / "unetpp_throughput.png", results / "unetpp_deep_throughput.png"]
    for png in written["plots"]:
        assert png.read_bytes().startswith(PNG_SIGNATURE)

    page = _Collector()
    page.feed(written["html"].read_text())
    # runs overview + per model: accuracy, infer_only, pipeline, and per run latency + stages
    assert page.tables == 1 + (3 + 3 * 2) + (3 + 1 * 2)
    assert len(page.imgs) == 2
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


def test_empty_folder_raises(tmp_path: Path, capsys):
    with pytest.raises(ResultError, match="no result files"):
        write_report(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "no result files" in capsys.readouterr().err


def test_cli_prints_written_paths(results: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli"
    assert main([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "report.md"), str(out / "report.html"), str(out / "unetpp_throughput.png")]
    assert all(Path(p).is_file() for p in printed)

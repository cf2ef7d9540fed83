"""The whole guide end to end through the real CLI: built-in data, then the full val split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from zoo import schema
from zoo.manifest import load_manifest
from zoo.schema import SchemaError

from tests.zootest import last_json

from .conftest import builtin_ids

M = load_manifest("unetpp")
SHORT = ("--no-peak", "--iters", "2", "--warmup", "0", "--time-budget", "1")


def test_builtin_run_record(builtin_result):
    rec = builtin_result["record"]
    schema.validate(rec)
    assert rec["status"] == "ok" and rec["model"]["name"] == "unetpp"
    assert rec["model"]["variant"].endswith("upsample=bilinear")
    assert rec["runtime"]["name"] == "onnxruntime"
    w = rec["provenance"]["weights"]
    assert w["sha256"] == "db72943a49e52a067eca38249c51f6114e6f565e2da521d4a3b7beae5fdd4f8a"
    assert w["verified"] is True and w["builtin"] is True
    d = rec["provenance"]["dataset"]
    assert d["num_samples"] == len(builtin_ids()) == 16 and d["builtin"] is True
    e = rec["export"]
    assert e["input_names"] == ["actual_input_1"] and e["output_names"] == ["output1"]
    assert e["opset"] == 17 and e["dynamic_batch"] is True and e["checker"] == "full_check_passed"
    assert e["parity"]["passed"] and e["parity"]["max_rel_diff"] < 1e-4
    assert e["parity"]["candidate"].startswith("onnxruntime ")  # the exported file on a plain session
    assert rec["verify"]["candidate"].startswith("onnxruntime ") and rec["verify"]["passed"] is True
    assert "predictions" not in rec                    # kept only with --save-predictions
    scopes = {(p["batch_size"], p["scope"]) for p in rec["perf"]}
    assert scopes == {(b, s) for b in (1, 4, 16) for s in ("infer_only", "pipeline")}
    for p in rec["perf"]:
        assert p["status"] == "ok" and p["throughput"] > 0
        lat = p["latency_ms"]
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        if p["scope"] == "pipeline":
            assert p["num_samples"] == 16 and set(p["stages"]) == {"read", "preprocess", "infer", "postprocess"}
            assert abs(sum(s["share"] for s in p["stages"].values()) - 1) < 1e-9
        else:
            assert p["iterations"] == 3 and p["warmup"] == 1
    acc = {a["name"]: a for a in rec["accuracy"]}
    assert set(acc) == {"guide", "upstream"}
    for a in acc.values():
        assert a["num_samples"] == 16 and 0.5 < a["value"] < 1.0
        assert a["passed"] is None and "subset" in a["description"]  # 16 of 134: not compared
        assert a["consistent_across_batch_sizes"] is True
        assert a["reference"]["value"] in (0.8385, 0.842)


def test_rerun_uses_export_and_compile_caches(builtin_result, run_zoo, tmp_path):
    proc = run_zoo("run", "--model", "unetpp", "--batch-sizes", "2", "--iters", "1", "--warmup", "0",
                   "--limit", "5", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert rec["export"]["cached"] is True
    assert rec["runtime"]["settings"]["compile_cached"] is True
    assert rec["export"]["onnx_sha256"] == builtin_result["record"]["export"]["onnx_sha256"]
    pipe = [p for p in rec["perf"] if p["scope"] == "pipeline"][0]
    assert pipe["num_samples"] == 5  # batches of 2, 2 and the last partial batch of 1
    assert pipe["stages"]["infer"]["latency_ms"]["count"] == 3


def test_schema_rejects_broken_records(builtin_result):
    rec = json.loads(builtin_result["path"].read_text())
    broken = [
        ("accuracy", lambda r: r["accuracy"][0].pop("value")),
        ("perf/0/scope", lambda r: r["perf"][0].__setitem__("scope", "everything")),
        ("provenance/weights/sha256", lambda r: r["provenance"]["weights"].__setitem__("sha256", "abc")),
        ("(root)", lambda r: r.__setitem__("surprise", 1)),
        ("timestamps/started", lambda r: r["timestamps"].__setitem__("started", "yesterday")),
    ]
    for where, damage in broken:
        r = json.loads(json.dumps(rec))
        damage(r)
        with pytest.raises(SchemaError) as ei:
            schema.validate(r, "x.json")
        assert where.split("/")[0] in str(ei.value) and "x.json" in str(ei.value)


def test_torch_backend_and_guide_variant_options(run_zoo, tmp_path):
    proc = run_zoo("run", "--model", "unetpp", "--backend", "torch", "--option", "upsample=nearest",
                   "--opset", "11", "--batch-sizes", "4", "--iters", "1", "--warmup", "0", "--limit", "6",
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert rec["runtime"]["name"] == "torch" and rec["model"]["options"]["upsample"] == "nearest"
    assert rec["export"]["opset"] == 11 and rec["export"]["parity"]["passed"]


@pytest.mark.slow
def test_full_val_split_matches_published_measurement(shared_dsb, run_zoo, tmp_path):
    """The shipped checkpoint on the 134-image val split: guide IoU 0.8369 and upstream IoU 0.8400
    (shared/weights/README.md) to 3 decimals; ONNX Runtime and PyTorch agree to 4."""
    values = {}
    for backend in ("onnxruntime", "torch"):
        proc = run_zoo("run", "--model", "unetpp", "--data", shared_dsb, "--backend", backend,
                       "--batch-sizes", "16", "--iters", "2", "--warmup", "1", "--out", tmp_path)
        assert proc.returncode == 0, proc.stderr
        rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
        assert rec["provenance"]["dataset"]["num_samples"] == 134
        assert rec["provenance"]["dataset"]["expected_samples"] == 134
        acc = {a["name"]: a for a in rec["accuracy"]}
        assert round(acc["guide"]["value"], 3) == 0.837
        assert round(acc["upstream"]["value"], 3) == 0.840
        assert acc["guide"]["passed"] is True and acc["upstream"]["passed"] is True
        values[backend] = acc
    for name in ("guide", "upstream"):
        assert abs(values["onnxruntime"][name]["value"] - values["torch"][name]["value"]) < 5e-5


def test_prep_writes_guide_style_bin_files(run_zoo, tmp_path):
    import numpy as np

    bins = tmp_path / "bins"
    proc = run_zoo("prep", "--model", "unetpp", "--limit", "3", "--bin-dir", bins)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((bins / "inputs.json").read_text())
    assert info["ids"] == builtin_ids()[:3] and info["shape"] == [3, 96, 96]
    from zoo.datasets import open_source
    source = open_source(M, None, None, 3, tmp_path / "c")
    adapter = M.adapter()
    for sid in info["ids"]:
        x = np.fromfile(bins / f"{sid}.bin", dtype=np.float32).reshape(3, 96, 96)
        np.testing.assert_array_equal(x, adapter.preprocess(source.read(sid))[0])
    again = run_zoo("prep", "--model", "unetpp", "--limit", "3", "--bin-dir", bins)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cost_and_peak_fields_of_a_real_run(builtin_result):
    """The model's cost from the graph, the machine's fp32 peak (the best of several kernels,
    cached per machine, zoo.peaks) with its ISA bound, and each block's fraction of it: never
    above 1 (a block that beats the peak has no fraction and says why)."""
    rec = builtin_result["record"]
    cost = rec["export"]["cost"]
    assert cost["flops_per_sample"] == pytest.approx(9.70e9, rel=0.01) and cost["params"] > 9e6
    peak = rec["device"]["fp32_peak"]
    assert peak["kernel"] in peak["candidates"] and peak["gflops"] == max(peak["candidates"].values())
    assert isinstance(peak["cached"], bool) and peak["measured_at"].endswith("Z")
    assert "isa_bound" in peak and peak["memory"]["gbytes_per_s"] > 0
    for p in rec["perf"]:
        assert p["gflops"] == pytest.approx(cost["flops_per_sample"] * p["throughput"] / 1e9)
        assert p["peak_gflops"] == peak["gflops"]
        if p["peak_fraction"] is None:
            assert p["gflops"] > peak["gflops"] and "above the measured peak" in p["peak_note"]
        else:
            assert p["peak_fraction"] == pytest.approx(p["gflops"] / peak["gflops"]) and p["peak_fraction"] <= 1
    pipes = [p for p in rec["perf"] if p["scope"] == "pipeline"]
    assert all(p["postprocess_workers"] == 1 for p in pipes)
    assert rec["runtime"]["settings"]["postprocess_workers"] == 1


# ------------------------------------------------------------------ verify, saved predictions, score

def _check_verify(block: dict, runtime: str, batch_size: int) -> None:
    """The record's verify block: the runtime under test against PyTorch on one real batch, the
    decisions of both protocols' masks compared pixel by pixel."""
    tol = M.verify["tolerance"]["fp32"]
    assert block["reference"].startswith("torch") and block["candidate"].startswith(f"{runtime} ")
    assert block["precision"] == "fp32" and block["batch_size"] == batch_size
    assert block["rtol"] == tol["rtol"] and block["atol"] == tol["atol"]
    assert block["max_flip_fraction"] == tol["max_flip_fraction"]
    assert block["passed"] is True and block["numerics_passed"] is True and block["max_rel_diff"] < 1e-4
    assert set(block["decisions"]) == {"guide", "upstream"}
    for d in block["decisions"].values():
        assert d["decisions"] == batch_size * 96 * 96 and d["fraction"] == d["flips"] / d["decisions"]
        assert d["fraction"] <= tol["max_flip_fraction"]
    assert block["decision_flips"] == sum(d["flips"] for d in block["decisions"].values())


@pytest.fixture(scope="module")
def saved_run(run_zoo, tmp_path_factory) -> dict:
    """A run on the built-in data that keeps its predictions (ONNX Runtime, batch sizes 1 and 4)."""
    out = tmp_path_factory.mktemp("saved")
    proc = run_zoo("run", "--model", "unetpp", "--save-predictions", "--batch-sizes", "1,4", *SHORT, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    return {"path": path, "record": json.loads(path.read_text())}


def test_saved_run_records_verify_and_predictions(saved_run):
    rec, path = saved_run["record"], saved_run["path"]
    schema.validate(rec)
    _check_verify(rec["verify"], "onnxruntime", M.verify["batch_size"])
    folder = path.parent / rec["predictions"]["path"]         # beside the record, named by its run
    from zoo.predictions import folder_digest
    assert rec["predictions"] == {"path": f"{rec['run_id']}.predictions", "num_samples": 16,
                                  "maps": ["guide", "upstream"], "detections": False,
                                  **folder_digest(folder)}    # the files the record vouches for
    assert rec["predictions"]["files"] == 1 + 2 * 16
    assert path.stem == rec["run_id"] and folder.is_dir()
    assert json.loads((folder / "index.json").read_text())["ids"] == builtin_ids()
    for key in ("guide", "upstream"):
        pngs = sorted(p.stem for p in (folder / key).glob("*.png"))
        assert pngs == sorted(builtin_ids())
        mask = cv2.imread(str(folder / key / f"{builtin_ids()[0]}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (96, 96) and mask.dtype == "uint8" and set(mask.ravel()) <= {0, 255}
    acc = {a["name"]: a for a in rec["accuracy"]}
    assert acc["guide"]["batch_size"] == 1 and acc["guide"]["consistent_across_batch_sizes"] is True


def test_score_recomputes_the_same_figures(saved_run, run_zoo):
    rec = saved_run["record"]
    proc = run_zoo("score", saved_run["path"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    printed = {}
    for line in lines[:-1]:                                 # "<protocol>: <figure>=<value>, ..."
        name, figures = line.split(": ", 1)
        printed[name] = {k: float(v) for k, v in (f.split("=") for f in figures.split(", "))}
    assert set(printed) == {a["name"] for a in rec["accuracy"]} == {"guide", "upstream"}
    for a in rec["accuracy"]:
        assert set(printed[a["name"]]) == set(a["metrics"])
        for k, v in a["metrics"].items():                  # shown rounded; score itself compares exactly
            assert printed[a["name"]][k] == pytest.approx(v, rel=1e-5), (a["name"], k)
    assert lines[-1] == "re-scored 16 saved predictions: every figure equals the record's"
    assert "DIFFERS" not in proc.stderr


def test_score_names_the_figure_a_damaged_prediction_changes(saved_run, run_zoo, tmp_path):
    """Flip the pixels of one saved guide mask: the folder is no longer the one the record's digest
    vouches for (one line, exit 2, nothing scored). Without the digest (a record before schema
    1.10) the re-scoring itself tells: the guide IoU no longer matches the record, the upstream
    one still does; exit 1."""
    rec, path = saved_run["record"], saved_run["path"]
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    folder = shutil.copytree(path.parent / rec["predictions"]["path"], tmp_path / rec["predictions"]["path"])
    victim = folder / "guide" / f"{builtin_ids()[3]}.png"
    mask = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(victim), 255 - mask)
    assert rec["predictions"]["files"] == 1 + 2 * 16  # index.json, a guide and an upstream mask per sample
    proc = run_zoo("score", copy)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: {folder}: the saved predictions are not the ones the record vouches for (33 file(s) now, 33 recorded")
    assert "DIFFERS" not in proc.stderr and not proc.stdout
    undigested = {**rec, "predictions": {k: v for k, v in rec["predictions"].items() if k not in ("sha256", "files")}}
    copy.write_text(json.dumps(undigested))
    proc = run_zoo("score", copy)
    assert proc.returncode == 1, proc.stderr[-3000:]
    recorded = next(a for a in rec["accuracy"] if a["name"] == "guide")["metrics"]["iou"]
    differs = [line for line in proc.stderr.splitlines() if line.startswith("DIFFERS")]
    # every figure the guide block states that the IoU makes (score compares them all: issue 21)
    assert [d.split(":")[0] for d in differs] == ["DIFFERS guide.value", "DIFFERS guide.metrics.iou",
                                                  "DIFFERS guide.reference.delta",
                                                  "DIFFERS guide.reference.relative_drop"], differs
    assert differs[1].startswith(f"DIFFERS guide.metrics.iou: recorded {recorded}, re-scored ")
    assert "Traceback" not in proc.stderr
    # a missing saved prediction is a one-line error naming the file
    victim.unlink()
    proc = run_zoo("score", copy)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {victim}: missing or unreadable saved prediction"


def test_score_without_saved_predictions_is_one_line(builtin_result, run_zoo, tmp_path):
    proc = run_zoo("score", builtin_result["path"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {builtin_result['path']}: the run kept no predictions "
                                                    f"(run it with --save-predictions)")


def test_openvino_records_its_own_verify_block(run_zoo, tmp_path):
    pytest.importorskip("openvino")
    proc = run_zoo("run", "--model", "unetpp", "--runtime", "openvino", "--batch-sizes", "1", "--limit", "4", *SHORT,
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    assert rec["runtime"]["name"] == "openvino"
    _check_verify(rec["verify"], "openvino", M.verify["batch_size"])
    assert rec["export"]["parity"]["candidate"].startswith("onnxruntime ")   # the export's own check

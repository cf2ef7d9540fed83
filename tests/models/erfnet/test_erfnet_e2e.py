"""The whole guide end to end through the real CLI (`python -m zoo run --model erfnet`): full-size
synthetic Cityscapes trees in the real layout (labelTrainIds; labelIds only), the guide's BN-weight
edit, and the real 256x128 sample from ../shared."""
from __future__ import annotations

import pytest
import torch

from zoo import schema
from zoo.datasets.cityscapes import CLASSES

from .conftest import SHARED_CITYSCAPES, expected_miou, last_result, result_files, write_cityscapes

COMMON = ("--iters", "1", "--warmup", "0", "--time-budget", "5")


@pytest.fixture(scope="module")
def train_ids_tree(tmp_path_factory, synthetic):
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"), synthetic["samples"])


def check_record(rec, n_samples, batch_sizes, expected=500):
    schema.validate(rec)
    assert rec["status"] == "ok" and rec["model"]["name"] == "erfnet"
    e = rec["export"]
    assert e["input_names"] == ["actual_input_1"] and e["output_names"] == ["output1"]
    assert e["dynamic_batch"] is True and e["checker"] == "full_check_passed"
    assert e["parity"]["passed"], e["parity"]
    d = rec["provenance"]["dataset"]
    assert d["name"] == "cityscapes" and d["num_samples"] == n_samples and d["expected_samples"] == expected
    w = rec["provenance"]["weights"]
    assert w["verified"] is False and w["builtin"] is False
    scopes = {(p["batch_size"], p["scope"]) for p in rec["perf"] if p["status"] == "ok"}
    assert scopes == {(b, s) for b in batch_sizes for s in ("infer_only", "pipeline")}
    (acc,) = rec["accuracy"]
    assert acc["name"] == "guide" and acc["metric"] == "miou" and acc["num_samples"] == n_samples
    assert [p["class"] for p in acc["per_class"]] == list(CLASSES) and len(acc["per_class"]) == 19
    assert acc["reference"]["value"] == 0.722 and acc["passed"] is None and "subset" in acc["description"]
    assert acc["consistent_across_batch_sizes"] is True
    return acc


def test_full_size_tree_with_train_ids(run_zoo, checkpoint, synthetic, train_ids_tree, tmp_path):
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", train_ids_tree,
                   "--batch-sizes", "1,2", *COMMON, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_result(proc)
    acc = check_record(rec, 3, (1, 2))
    assert rec["export"]["opset"] == 17 and "edit" not in rec["export"]
    assert rec["provenance"]["dataset"]["preparation"]["labels"]["labelTrainIds"] == 3
    # the labels are the model's own predictions: a correct pipeline (pairing by name, the
    # guide's resize and scale, nearest labels, 255 -> 19) scores what upstream's code scores
    want = expected_miou(synthetic["pred"], synthetic["samples"])
    assert want > 0.3
    assert acc["value"] == pytest.approx(want, abs=2e-3)
    present = [c for c, p in zip(range(19), acc["per_class"]) if p["iou"] > 0]
    assert all(acc["per_class"][c]["iou"] > 0.97 for c in present)


def test_tree_with_label_ids_only(run_zoo, checkpoint, synthetic, tmp_path):
    two = dict(list(synthetic["samples"].items())[:2])
    root = write_cityscapes(tmp_path / "cs", two, kinds=("labelIds",))
    assert not list(root.rglob("*labelTrainIds*"))
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", root,
                   "--batch-sizes", "1", *COMMON, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_result(proc)
    acc = check_record(rec, 2, (1,))
    assert rec["provenance"]["dataset"]["preparation"]["labels"] == {"labelTrainIds": 0, "labelIds (trainIds derived)": 2}
    assert acc["value"] == pytest.approx(expected_miou(synthetic["pred"], two), abs=2e-3)


def test_bn_weight_clamp_option_is_applied_and_reported(run_zoo, checkpoint, erfnet, train_ids_tree, tmp_path):
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", train_ids_tree, "--limit", "1",
                   "--option", "bn_weight_clamp=true", "--opset", "11", "--batch-sizes", "1", *COMMON,
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_result(proc)
    check_record(rec, 1, (1,))
    assert rec["model"]["options"] == {"bn_weight_clamp": True} and rec["export"]["opset"] == 11
    edit = rec["export"]["edit"]
    n_small = [int((m.weight.abs() <= 0.01).sum()) for m in erfnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert edit["name"] == "bnclamp0.01" and edit["path"].endswith("model.bnclamp0.01.onnx")
    assert edit["initializers_changed"] == sum(1 for n in n_small if n) and edit["values_changed"] == sum(n_small)
    assert edit["bn_layers_considered"] == 39 and edit["bn_folded_into_conv"] == 34
    assert rec["export"]["path"] == edit["path"]                     # the runtime used the edited file
    assert rec["export"]["onnx_sha256"] != edit["onnx_sha256"]       # ... not the plain export,
    assert rec["export"]["parity"]["passed"]                         # which matches PyTorch
    assert edit["effect_vs_torch"]["passed"] is False and edit["effect_vs_torch"]["max_rel_diff"] > 1e-2
    # the runtime is verified against the graph it runs (the edited one), not PyTorch's unedited
    # outputs: the edit's own effect is not a fault of the runtime, and the record is valid
    assert rec["status"] == "ok" and rec["verify"]["passed"]
    assert rec["verify"]["reference"].startswith("onnxruntime") and "bnclamp0.01" in rec["verify"]["reference"]


def test_real_cityscapes_sample(run_zoo, checkpoint, tmp_path):
    if not (SHARED_CITYSCAPES / "leftImg8bit" / "val").is_dir():
        pytest.skip(f"the real Cityscapes sample is not available at {SHARED_CITYSCAPES} (../shared is optional)")
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", SHARED_CITYSCAPES,
                   "--backend", "torch", "--batch-sizes", "1", *COMMON, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_result(proc)
    acc = check_record(rec, 1, (1,))
    assert rec["runtime"]["name"] == "torch"
    assert rec["provenance"]["dataset"]["builtin"] is False
    assert 0.0 <= acc["value"] < 1.0
    assert len(result_files(tmp_path)) == 1


def test_builtin_sample_without_data(run_zoo, checkpoint, tmp_path):
    """`run --model erfnet --weights W` with no --data: the built-in real sample (zoo/samples)."""
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--batch-sizes", "1", *COMMON,
                   "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_result(proc)
    check_record(rec, 1, (1,), expected=None)                         # a sample, not the val split
    d = rec["provenance"]["dataset"]
    assert d["builtin"] is True and d["path"].endswith("zoo/samples/cityscapes")


def test_bn_weight_clamp_reaches_every_runtime_that_runs_the_graph(run_zoo, checkpoint, tmp_path):
    """Whether a runtime takes an ONNX edit is a property of the runtime (runs_onnx_graph), not a
    test of its name: OpenVINO compiles the edited file and scores as ONNX Runtime does on it."""
    from zoo.runtimes import RUNTIMES
    assert {n for n, cls in RUNTIMES.items() if not cls.runs_onnx_graph} == {"torch"}
    recs = {}
    for backend in ("onnxruntime", "openvino"):
        proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--backend", backend, "--no-peak",
                       "--option", "bn_weight_clamp=true", "--batch-sizes", "1", *COMMON, "--out", tmp_path / backend)
        assert proc.returncode == 0, proc.stderr[-3000:]
        recs[backend] = last_result(proc)
    ov, ort = recs["openvino"], recs["onnxruntime"]
    assert ov["export"]["edit"]["name"] == ort["export"]["edit"]["name"] == "bnclamp0.01"
    assert ov["export"]["edit"]["onnx_sha256"] == ort["export"]["edit"]["onnx_sha256"]
    assert ov["accuracy"][0]["value"] == pytest.approx(ort["accuracy"][0]["value"], abs=1e-3)
    assert ov["verify"]["passed"] and "edited graph" in ov["verify"]["reference"]


def test_saved_predictions_rescore_to_the_recorded_figures(run_zoo, checkpoint, train_ids_tree, tmp_path):
    """--save-predictions keeps each image's 512x1024 label map (uint8 PNG); `python -m zoo score`
    reads the labels again from the tree and the maps from the files: the same figures, no
    inference; a changed map is a different figure (exit 1)."""
    import cv2
    from pathlib import Path
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", train_ids_tree, "--save-predictions",
                   "--batch-sizes", "1", *COMMON, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    rec = last_result(proc)
    assert rec["predictions"]["maps"] == ["labels"] and rec["predictions"]["num_samples"] == 3
    assert rec["verify"]["passed"] and rec["verify"]["decisions"]["labels"]["decisions"] == 512 * 1024
    maps = sorted((path.parent / rec["predictions"]["path"] / "labels").glob("*.png"))
    assert len(maps) == 3 and cv2.imread(str(maps[0]), cv2.IMREAD_UNCHANGED).shape == (512, 1024)
    score = run_zoo("score", path)
    assert score.returncode == 0 and "every figure equals the record's" in score.stdout, score.stderr[-2000:]
    m = cv2.imread(str(maps[0]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(maps[0]), (m + 1) % 20)  # every pixel of one image another class
    bad = run_zoo("score", path)  # not the files the record's digest vouches for: nothing scored
    assert bad.returncode == 2 and "not the ones the record vouches for" in bad.stderr, bad.stderr[-2000:]
    import json
    path.write_text(json.dumps({**rec, "predictions": {k: v for k, v in rec["predictions"].items()
                                                       if k not in ("sha256", "files")}}))
    bad = run_zoo("score", path)  # without the digest (a record before 1.10), the re-scoring tells
    assert bad.returncode == 1 and "DIFFERS guide.metrics.miou" in bad.stderr and "DIFFERS guide.value" in bad.stderr, bad.stderr[-2000:]

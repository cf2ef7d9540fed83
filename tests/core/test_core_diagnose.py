"""`python -m zoo diagnose` (zoo/diagnose.py): the proof is a planted fault.

tests/fixtures/models/spikeseg is a plugin model (ZOO_MODEL_DIRS) whose `spike` conv writes one
channel 10^4 times larger than the others on the real built-in images, scaled back by the next
conv: fp32 is fine, per-tensor int8 of that tensor rounds the other channels to zero. The real
command, on real ONNX Runtime QDQ quantization and sessions, must name that layer as the first
jump, rank the unit that keeps its output in fp32 first, and --auto must find the --keep-fp32
list that brings the int8 output back; the same list given back to the command must then give
an int8 model whose output error is many times smaller."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.zootest import assert_clean_failure
from zoo import diagnose as dg
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models"
SPIKE, BACK = "/spike/Conv", "/back/Conv"


def zoo(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_CACHE": str(tmp_path / "cache"), "ZOO_MODEL_DIRS": str(FIXTURES)}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(the report of `diagnose --auto` on spikeseg, its stdout, the tmp folder)."""
    tmp = tmp_path_factory.mktemp("diagnose")
    out = tmp / "report.json"
    proc = zoo("diagnose", "--model", "spikeseg", "--precision", "int8", "--samples", "8", "--auto", "--out", str(out),
               tmp_path=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, tmp


def test_first_jump_names_the_planted_layer(planted):
    report, stdout, _ = planted
    jump = report["first_jump"]
    assert jump["node"] == SPIKE and jump["tensor"] == "/spike/Conv_output_0"
    # its relative error stays small (the outlier dominates the norm); its channels are lost
    assert jump["rel_err"] < dg.JUMP_THRESHOLD < 0.5 < jump["channel_rel_err"]
    assert jump["error"] >= dg.JUMP_FACTOR * jump["inputs_error"]
    assert f"first jump: /spike/Conv_output_0 (node {SPIKE}" in stdout
    rows = {r["tensor"]: r for r in report["layers"]}
    assert list(rows) == ["/relu1/Relu_output_0", "/spike/Conv_output_0", "/relu2/Relu_output_0", "logits"]
    assert rows["/relu1/Relu_output_0"]["rel_err"] < 0.05 and rows["logits"]["rel_err"] > 0.5
    assert rows["/relu2/Relu_output_0"]["int8_node"] == BACK  # the Relu folded into the Q/DQ clamp


def test_sensitivity_ranks_the_planted_layer_first_and_keeping_it_helps(planted):
    report, stdout, _ = planted
    top = report["sensitivity"][0]
    assert top["kind"] == "tensor" and top["tensor"] == "/spike/Conv_output_0" and top["keep"] == [SPIKE, BACK]
    assert report["int8"]["rel_err"] > 0.5 and top["error_ratio"] > 10
    # one node alone cannot: the tensor is quantized for its producer and for its consumer
    single = {u["node"]: u for u in report["sensitivity"] if u["kind"] == "node"}
    assert set(single) == {"/conv1/Conv", SPIKE, BACK, "/head/Conv"}
    assert all(u["error_ratio"] < 1.5 for u in single.values())
    assert "1. tensor /spike/Conv_output_0 (keeps /spike/Conv,/back/Conv)" in stdout


def test_auto_finds_the_keep_list_and_it_works_when_given_back(planted):
    report, stdout, tmp = planted
    auto, ac = report["auto"], report["accuracy_control"]
    assert ac["by"] == "fidelity" and ac["tolerance"] == 0.01 and not ac["int8_within"]  # a random checkpoint
    assert auto["reached"] and auto["keep"] == [SPIKE, BACK]
    assert auto["steps"][-1]["flip_fraction"] <= 0.01 < report["int8"]["flip_fraction"]
    assert f"--keep-fp32 {SPIKE},{BACK}" in stdout

    out = tmp / "kept.json"
    proc = zoo("diagnose", "--model", "spikeseg", "--samples", "8", "--keep-fp32", f"{SPIKE},{BACK}", "--out", str(out),
               tmp_path=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = json.loads(out.read_text())
    assert kept["keep_fp32"] == [SPIKE, BACK] and kept["accuracy_control"]["int8_within"]
    assert report["int8"]["rel_err"] / kept["int8"]["rel_err"] > 10
    assert kept["first_jump"] is None or kept["first_jump"]["node"] != SPIKE
    assert not {u.get("node") for u in kept["sensitivity"]} & {SPIKE, BACK}  # already in fp32: not tried again


def test_bad_input_is_one_line(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    assert_clean_failure(zoo("diagnose", "--model", "spikeseg", "--runtime", "torch", "--out", str(out / "x.json"),
                             tmp_path=tmp_path), out, "--runtime must be one of onnxruntime, openvino")
    assert_clean_failure(zoo("diagnose", "--model", "spikeseg", "--precision", "fp32", "--out", str(out / "x.json"),
                             tmp_path=tmp_path), out, "--precision must be a calibrated precision")
    assert_clean_failure(zoo("diagnose", "--model", "spikeseg", "--keep-fp32", "/nope/Conv", "--out", str(out / "x.json"),
                             tmp_path=tmp_path), out, "/nope/Conv is not a node")
    assert_clean_failure(zoo("diagnose", "--model", "spikeseg", "--out", str(out), tmp_path=tmp_path), out,
                         "is a folder")


# --- the pieces, on hand-made graphs ----------------------------------------------------------

def _chain(ops: list[tuple[str, str, list[str], str]]):
    """A graph of (op, node name, inputs, output) nodes on input x."""
    nodes = [helper.make_node(op, ins, [out], name=name) for op, name, ins, out in ops]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info(ops[-1][3], TensorProto.FLOAT, [1, 2])])
    return helper.make_model(graph)


def _row(tensor, node, rel, chan=None):
    return {"tensor": tensor, "node": node, "int8_node": node, "op": "Relu", "quantized": True, "cosine": 1.0,
            "rel_err": rel, "max_abs_err": 0.0, "channel_rel_err": chan}


def test_first_jump_is_made_not_inherited():
    m = _chain([("Relu", "a", ["x"], "ta"), ("Relu", "b", ["ta"], "tb"), ("Identity", "c", ["tb"], "tc"),
                ("Relu", "d", ["tc"], "td"), ("Relu", "e", ["td"], "te")])
    # a: 0.01; b: 0.2 >= 5 x 0.01 -> the jump; d inherits b's through c (not compared); e grows 0.3 < 5 x 0.2
    rows = [_row("ta", "a", 0.01), _row("tb", "b", 0.2), _row("td", "d", 0.21), _row("te", "e", 0.3)]
    assert dg.first_jump(m, rows)["tensor"] == "tb"
    assert dg.upstream_errors(m, rows) == {"ta": 0.0, "tb": 0.01, "td": 0.2, "te": 0.21}
    rows[1]["rel_err"] = 0.049  # below the threshold: b is no jump, and nothing after grows 5x
    assert dg.first_jump(m, rows) is None
    rows[1]["channel_rel_err"] = 0.9  # but its channels are lost: the channel error counts
    j = dg.first_jump(m, rows)
    assert j["tensor"] == "tb" and j["error"] == 0.9 and j["suspect"] is None
    rows[1]["channel_rel_err"], rows[2]["rel_err"] = None, 0.26  # d made it, through c, from b's 0.049
    assert dg.first_jump(m, rows)["tensor"] == "td"
    assert dg.first_jump(m, rows, factor=6.0) is None


def test_layer_figures_match_numpy_over_batches():
    """A row's figures come from the one comparator's streaming numbers (zoo.comparator), fed
    batch by batch; rel_err is the L2 one, ||a-b||/||a||."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    a[:, 0] *= 1e4  # an outlier channel
    b = a.copy()
    b[:, 1:] = 0.0  # every other channel lost
    ag = dg.tensor_diff()
    ag.update(a[:2], b[:2])
    ag.update(a[2:], b[2:])
    f = dg.layer_figures(ag)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert f["rel_err"] == pytest.approx(np.linalg.norm(a64 - b64) / np.linalg.norm(a64), rel=1e-9) and f["rel_err"] < 1e-3
    assert f["cosine"] == pytest.approx(np.vdot(a64, b64) / np.linalg.norm(a64) / np.linalg.norm(b64), rel=1e-12)
    assert f["max_abs_err"] == pytest.approx(np.abs(a64 - b64).max())
    assert f["channel_rel_err"] == pytest.approx(2 / 3)  # channels 1 and 2 entirely wrong, channel 0 exact
    with pytest.raises(ZooError, match=r"^diagnose: shapes differ: fp32 \(2, 3\), int8 \(3, 2\)$"):
        dg.tensor_diff().update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_seen_by_consumers_follows_q_dq_pairs():
    m = _chain([("Relu", "r", ["x"], "t"), ("QuantizeLinear", "q", ["t", "s", "z"], "t_q"),
                ("DequantizeLinear", "dq", ["t_q", "s", "z"], "t_dq"), ("Relu", "r2", ["t_dq"], "u")])
    assert dg.seen_by_consumers(m.graph) == {"t": "t_dq"}
    fp32 = _chain([("Relu", "r", ["x"], "t"), ("Relu", "r2", ["t"], "u")])
    rows = dg.shared_tensors(fp32, m)
    assert [(r["tensor"], r["qdq"], r["quantized"]) for r in rows] == [("t", "t_dq", True), ("u", "u", False)]
    assert onnx.load_from_string(dg.with_outputs(fp32, ["t"])).graph.output[-1].name == "t"


def test_openvino_table_is_onnxruntime_s_and_auto_is_nncf_accuracy_control(tmp_path):
    out = tmp_path / "ov.json"
    proc = zoo("diagnose", "--model", "spikeseg", "--runtime", "openvino", "--samples", "8", "--auto", "--out", str(out),
               tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "ONNX Runtime" in report["note"] and report["first_jump"]["node"] == SPIKE
    auto = report["auto"]
    assert auto["tool"] == "nncf.quantize_with_accuracy_control" and auto["max_drop"] == 0.01
    assert SPIKE in auto["keep"] and f"{SPIKE}/WithoutBiases" in auto["reverted"]
    assert "--runtime openvino --precision int8 --keep-fp32" in proc.stdout

"""Bad input: a clear one-line error naming the file and the problem, a non-zero exit code and
no result file. Every case goes through the real CLI (`python -m zoo run`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.zootest import assert_clean_failure, huge_png

from .conftest import MODEL_DIR, ROOT, builtin_ids, copy_dataset, result_files

IDS = builtin_ids()[:3]


@pytest.fixture
def small_data(tmp_path):
    return copy_dataset(IDS, tmp_path / "dsb")


def run(run_zoo, out, *args, cache=None):
    return run_zoo("run", "--model", "unetpp", "--batch-sizes", "2", "--iters", "1", "--warmup", "0",
                   "--out", out, *args, cache=cache)


def test_unknown_model(run_zoo, out):
    proc = run_zoo("run", "--model", "nope", "--out", out)
    assert_clean_failure(proc, out, "unknown model 'nope'", "unetpp")


def test_unknown_backend(run_zoo, out):
    assert_clean_failure(run(run_zoo, out, "--backend", "tensorflow"), out, "unknown runtime 'tensorflow'", "onnxruntime")


def test_missing_data_folder(run_zoo, out, tmp_path):
    missing = tmp_path / "nowhere"
    assert_clean_failure(run(run_zoo, out, "--data", missing), out, missing, "data folder not found")


def test_not_a_dsb_folder(run_zoo, out, tmp_path):
    assert_clean_failure(run(run_zoo, out, "--data", tmp_path), out, tmp_path, "not a DSB2018 folder")


def test_id_without_image(run_zoo, out, small_data, tmp_path):
    img = small_data / "stage1_train" / IDS[1] / "images" / f"{IDS[1]}.png"
    img.unlink()
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, img, "image not found")


def test_id_listed_but_absent(run_zoo, out, small_data, tmp_path):
    (small_data / "ids.txt").write_text("\n".join(IDS + ["deadbeef"]) + "\n")
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, "deadbeef", "image not found")


def test_id_without_masks(run_zoo, out, small_data, tmp_path):
    mdir = small_data / "stage1_train" / IDS[2] / "masks"
    for p in mdir.glob("*.png"):
        p.unlink()
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, mdir, "no mask PNGs")


@pytest.mark.parametrize("which", ["image", "mask"])
def test_truncated_png(run_zoo, out, small_data, tmp_path, which):
    sdir = small_data / "stage1_train" / IDS[0]
    victim = sdir / "images" / f"{IDS[0]}.png" if which == "image" else sorted((sdir / "masks").glob("*.png"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, victim, "unreadable or truncated")
    # the failed preparation left nothing behind in the cache that a rerun would trust
    assert not list((tmp_path / "c").rglob("DONE"))


def test_not_a_png(run_zoo, out, small_data, tmp_path):
    victim = small_data / "stage1_train" / IDS[0] / "images" / f"{IDS[0]}.png"
    victim.write_text("this is not an image")
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, victim, "unreadable or truncated")


def test_missing_weights(run_zoo, out, tmp_path):
    w = tmp_path / "none.pth"
    assert_clean_failure(run(run_zoo, out, "--weights", w), out, w, "weights file not found")


def test_wrong_checksum(run_zoo, out):
    w = MODEL_DIR / "weights" / "unetpp_dsb2018.pth"
    proc = run(run_zoo, out, "--weights", w, "--sha256", "0" * 64)
    assert_clean_failure(proc, out, w, "sha256 mismatch", "0" * 64, "db72943a49e5")


def test_wrong_keys(run_zoo, out, tmp_path):
    sd = torch.load(MODEL_DIR / "weights" / "unetpp_dsb2018.pth", map_location="cpu", weights_only=True)
    sd.pop("final.bias")
    sd["conv0_0.bn1.weight"] = torch.ones(31)
    w = tmp_path / "bad.pth"
    torch.save(sd, w)
    last = assert_clean_failure(run(run_zoo, out, "--weights", w), out, w, "does not match the model")
    assert "missing: final.bias" in last and "conv0_0.bn1.weight [31] != [32]" in last


def test_not_a_checkpoint(run_zoo, out, tmp_path):
    w = tmp_path / "garbage.pth"
    w.write_bytes(os.urandom(1000))
    assert_clean_failure(run(run_zoo, out, "--weights", w), out, w, "not a readable PyTorch checkpoint")


def test_broken_onnx(run_zoo, out, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + os.urandom(64))
    assert_clean_failure(run(run_zoo, out, "--onnx", bad), out, bad, "not a valid ONNX model")


def test_bad_batch_sizes(run_zoo, out):
    proc = run_zoo("run", "--model", "unetpp", "--batch-sizes", "0,4", "--out", out)
    assert proc.returncode == 2 and "batch sizes must be positive" in proc.stderr
    assert result_files(out) == []


def test_interrupted_run_writes_nothing(out, zoo_cache):
    env = {**os.environ, "ZOO_CACHE": str(zoo_cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--batch-sizes", "1",
                             "--iters", "100000", "--time-budget", "600", "--stable-tolerance", "0",
                             "--out", str(out)],  # no stop-when-stable: still timing when interrupted
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            # started with SIGINT ignored, as a background job of a non-interactive
                            # shell is: the zoo sets its own handler, whatever the caller's disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 300
        for line in proc.stderr:  # wait until inference is running
            if line.startswith("[6/7]") or time.time() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "error: interrupted; no result written"
    assert result_files(out) == []


# ------------------------------------------------------------------ dataset hardening (issue 11)

def test_id_climbing_out_of_the_data_writes_nothing_outside(run_zoo, out, small_data, tmp_path):
    """`../` in an id used to send the prepared PNGs out of the cache (here: over a file beside
    it, reached through the same climb that finds the source image)."""
    victim_dir = tmp_path / "evil"
    (victim_dir / "images").mkdir(parents=True)
    (victim_dir / "masks").mkdir()
    src = small_data / "stage1_train" / IDS[0]
    victim = tmp_path / "evil.png"
    victim.write_bytes((src / "images" / f"{IDS[0]}.png").read_bytes())
    for m in (src / "masks").glob("*.png"):
        (victim_dir / "masks" / m.name).write_bytes(m.read_bytes())
    before = victim.read_bytes()
    climb = "../" * 40 + str(victim_dir).lstrip("/")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{IDS[0]}\n{climb}\n")
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", ids, cache=tmp_path / "c")
    assert_clean_failure(proc, out, f"{ids}: line 2: ", "path separator")
    assert victim.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsb", "evil", "evil.png", "ids.txt", "results"]


def test_absolute_id_and_non_utf8_ids_file(run_zoo, out, small_data, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{IDS[0]}\n\n{small_data / 'stage1_train' / IDS[1]}\n")
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", ids, cache=tmp_path / "c")
    assert_clean_failure(proc, out, f"{ids}: line 3: ", "absolute path")
    ids.write_bytes(f"{IDS[0]}\n".encode() + "caf\u00e9\n".encode("latin-1"))
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", ids, cache=tmp_path / "c")
    assert_clean_failure(proc, out, f"{ids}: line 2: not UTF-8")


def test_huge_image_header_and_non_utf8_mask_name(run_zoo, out, small_data, tmp_path):
    img = small_data / "stage1_train" / IDS[1] / "images" / f"{IDS[1]}.png"
    huge_png(img)
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, img, "40000x40000", "2^30")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name in ("DONE", ".zoo-entry.json")]  # no entry kept
    mdir = small_data / "stage1_train" / IDS[2] / "masks"
    first = sorted(mdir.glob("*.png"))[0]
    first.rename(mdir / os.fsdecode(b"caf\xe9.png"))
    (small_data / "ids.txt").write_text(f"{IDS[2]}\n")
    proc = run(run_zoo, out, "--data", small_data, "--ids-file", small_data / "ids.txt", cache=tmp_path / "c")
    assert_clean_failure(proc, out, f"{mdir}/caf\\xe9.png", "not UTF-8")


def test_failed_png_write_is_one_line(small_data, tmp_path):
    """cv2.imwrite returns False instead of raising: the preparation must not carry on with a
    missing file (a folder where the PNG goes makes it fail, whoever runs the test)."""
    from zoo.datasets.dsb2018 import prepare_sample
    from zoo.errors import ZooError
    prep = tmp_path / "prep"
    (prep / "masks" / "0").mkdir(parents=True)
    (prep / "images" / f"{IDS[0]}.png").mkdir(parents=True)
    with pytest.raises(ZooError, match="cannot write the image") as exc:
        prepare_sample(small_data, IDS[0], prep, 96)
    assert str(exc.value).startswith(str(prep / "images" / f"{IDS[0]}.png"))
    with pytest.raises(ZooError, match="path separator"):
        prepare_sample(small_data, f"../{IDS[0]}", prep, 96)

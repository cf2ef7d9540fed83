"""Bad input: a clear one-line `error: <file>: <problem>`, exit code 2 and no result file.

Two cases go through `python -m zoo` in a subprocess (the real process: exit code, no
traceback); the others call the same entrypoint, zoo.cli.main(argv), in this process (it
returns the exit code `python -m zoo` exits with), to keep the run short."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from zoo.cli import main

from tests.zootest import huge_png

from .conftest import official_style_state_dict, result_files, write_cityscapes

URL = "https://github.com/Eromera/erfnet_pytorch/raw/master/trained_models/erfnet_pretrained.pth"


def _sample(seed, h=128, w=256):
    rng = np.random.default_rng(seed)
    lab = rng.choice(np.r_[np.arange(19), 255].astype(np.uint8), size=(h, w))
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), lab


@pytest.fixture
def tree(tmp_path):
    """Three small samples (256x128: the guide resizes them to 1024x512) in the real layout."""
    return write_cityscapes(tmp_path / "cs", {f"bonn_000000_00000{i}": _sample(i) for i in range(3)})


@pytest.fixture
def zoo(zoo_cache, monkeypatch, capsys, out):
    """zoo.cli.main in this process -> (exit code, last stderr line)."""
    monkeypatch.setenv("ZOO_CACHE", str(zoo_cache))

    def _run(*args):
        capsys.readouterr()
        # main() arms a parent-death watch from ZOO_PARENT_PID and sets it to its own pid for its
        # children: a second in-process call would take this process for its own parent's death
        monkeypatch.delenv("ZOO_PARENT_PID", raising=False)
        code = main(["run", "--model", "erfnet", "--batch-sizes", "1", "--iters", "1", "--warmup", "0",
                     "--out", str(out), *map(str, args)])
        err = capsys.readouterr().err
        return code, (err.strip().splitlines() or [""])[-1], err
    return _run


def assert_clean_failure(code, last, err, out, *needles):
    assert code == 2, err[-2000:]
    assert last.startswith("error: ") and "Traceback" not in err, err[-2000:]
    for n in needles:
        assert str(n) in last, (n, last)
    assert result_files(out) == [], "no (partial) result may be written"


def test_missing_label_names_the_image_subprocess(run_zoo, checkpoint, tree, out):
    img = tree / "leftImg8bit/val/bonn/bonn_000000_000001_leftImg8bit.png"
    (tree / "gtFine/val/bonn/bonn_000000_000001_gtFine_labelTrainIds.png").unlink()
    proc = run_zoo("run", "--model", "erfnet", "--weights", checkpoint, "--data", tree, "--out", out)
    last = proc.stderr.strip().splitlines()[-1]
    assert_clean_failure(proc.returncode, last, proc.stderr, out, img, "no label for this image")


def test_no_weights_says_how_to_get_the_checkpoint_subprocess(run_zoo, out):
    # the manifest's default is the official URL, which has no published checksum: refused,
    # before any download, naming the URL to fetch
    proc = run_zoo("run", "--model", "erfnet", "--out", out)
    last = proc.stderr.strip().splitlines()[-1]
    assert_clean_failure(proc.returncode, last, proc.stderr, out, URL, "no published checksum", "--weights FILE")


def test_onnx_edit_option_with_the_torch_backend_is_refused(zoo, out, checkpoint):
    assert_clean_failure(*zoo("--weights", checkpoint, "--backend", "torch", "--option", "bn_weight_clamp=true"),
                         out, "bnclamp0.01", "--runtime onnxruntime")


def test_url_without_checksum_is_refused(zoo, out):
    assert_clean_failure(*zoo("--weights", URL), out, URL, "refusing to download")


@pytest.mark.parametrize("which", ["image", "label"])
def test_truncated_png_before_inference(zoo, checkpoint, tree, out, which):
    victim = (tree / "leftImg8bit/val/bonn/bonn_000000_000000_leftImg8bit.png" if which == "image"
              else tree / "gtFine/val/bonn/bonn_000000_000000_gtFine_labelTrainIds.png")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree), out, victim, "unreadable or truncated")


def test_truncated_png_during_the_pipeline(zoo, checkpoint, tree, out):
    # with batch size 1 (and parity batch size 1) the second image is read only by the
    # streaming pipeline, after export, compile and the first inference
    victim = tree / "leftImg8bit/val/bonn/bonn_000000_000001_leftImg8bit.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree), out, victim, "unreadable or truncated")


def test_missing_data_folder(zoo, checkpoint, tmp_path, out):
    missing = tmp_path / "nowhere"
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", missing), out, missing, "data folder not found")


def test_not_a_cityscapes_folder(zoo, checkpoint, tmp_path, out):
    (tmp_path / "x" / "images").mkdir(parents=True)
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tmp_path / "x"), out, tmp_path / "x",
                         "not a Cityscapes folder")


def test_ids_file_names_a_missing_image(zoo, checkpoint, tree, tmp_path, out):
    ids = tmp_path / "ids.txt"
    ids.write_text("bonn_000000_000001\nbonn_000009_000009\n")
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree, "--ids-file", ids), out,
                         f"{ids}: 1 of 2 listed samples have no image", "_leftImg8bit.png: bonn_000009_000009")
    # none of the listed ids exists: named too (it used to say "no *_leftImg8bit.png images")
    ids.write_text("bonn_000009_000008\nbonn_000009_000009\n")
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree, "--ids-file", ids), out,
                         f"{ids}: 2 of 2 listed", "bonn_000009_000008, bonn_000009_000009")


def test_wrong_checksum(zoo, checkpoint, out):
    assert_clean_failure(*zoo("--weights", checkpoint, "--sha256", "0" * 64), out, checkpoint, "sha256 mismatch",
                         "0" * 64)


def test_missing_weights_file(zoo, tmp_path, out):
    w = tmp_path / "erfnet_pretrained.pth"
    assert_clean_failure(*zoo("--weights", w), out, w, "weights file not found")


def test_wrong_keys(zoo, erfnet, tmp_path, out):
    sd = official_style_state_dict(erfnet)
    sd.pop("module.decoder.output_conv.bias")
    sd["module.encoder.initial_block.bn.weight"] = torch.ones(13)
    sd["module.encoder.extra.weight"] = torch.ones(1)
    w = tmp_path / "bad.pth"
    torch.save(sd, w)
    code, last, err = zoo("--weights", w)
    assert_clean_failure(code, last, err, out, w, "does not match the model", "missing: decoder.output_conv.bias",
                         "unexpected: encoder.extra.weight", "encoder.initial_block.bn.weight [13] != [16]")


def test_not_a_checkpoint(zoo, tmp_path, out):
    w = tmp_path / "garbage.pth"
    w.write_bytes(os.urandom(1000))
    assert_clean_failure(*zoo("--weights", w), out, w, "not a readable PyTorch checkpoint")


def test_bad_option_value(zoo, checkpoint, out):
    assert_clean_failure(*zoo("--weights", checkpoint, "--option", "bn_weight_clamp=maybe"), out,
                         "bn_weight_clamp must be one of false, true, regex")


# ------------------------------------------------------------------ dataset hardening (issue 11)

def test_huge_image_header(zoo, checkpoint, tree, out):
    victim = tree / "leftImg8bit/val/bonn/bonn_000000_000000_leftImg8bit.png"
    huge_png(victim)
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree), out, victim, "40000x40000", "2^30")


def test_label_ids_outside_the_table(zoo, checkpoint, tmp_path, out):
    tree = write_cityscapes(tmp_path / "cs", {f"bonn_000000_00000{i}": _sample(i) for i in range(2)},
                            kinds=("labelIds",))
    victim = tree / "gtFine/val/bonn/bonn_000000_000000_gtFine_labelIds.png"
    from PIL import Image
    lab = np.array(Image.open(victim))
    lab[5, 7] = 250
    Image.fromarray(lab).save(victim)
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree), out, victim, "labelId values [250]",
                         "outside the Cityscapes label table")


@pytest.mark.parametrize("content, needle", [
    ("bonn_000000_000001\n".encode() + "bonn_00000\u00e9\n".encode("latin-1"), "line 2: not UTF-8 text"),
    (b"bonn_000000_000001\n../bonn/bonn_000000_000002\n", "line 2: id '../bonn/bonn_000000_000002' contains a path"),
    (b"bonn_000000_000001\nbonn_000000_000002\nbonn_000000_000001\n", "duplicate ids: lines 1 and 3"),
])
def test_bad_ids_file(zoo, checkpoint, tree, tmp_path, out, content, needle):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree, "--ids-file", ids), out, f"{ids}: {needle}")


def test_non_utf8_image_name(zoo, checkpoint, tree, out):
    folder = tree / "leftImg8bit/val/bonn"
    (folder / "bonn_000000_000001_leftImg8bit.png").rename(folder / os.fsdecode(b"bonn_000000_00000\xe9_leftImg8bit.png"))
    assert_clean_failure(*zoo("--weights", checkpoint, "--data", tree), out,
                         f"{folder}/bonn_000000_00000\\xe9_leftImg8bit.png: file name is not UTF-8")

"""Bad input through the real CLI (`python -m zoo run --model fastscnn`): exit code 2, a one-line
error naming the file and the problem, and no result file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.zootest import assert_clean_failure, huge_png

from .conftest import SAMPLE_NAME, copy_builtin, result_files, synthetic_tree

IMG_REL = f"leftImg8bit/val/frankfurt/{SAMPLE_NAME}_leftImg8bit.png"
GT_DIR = "gtFine/val/frankfurt"


@pytest.fixture
def sample(tmp_path):
    return copy_builtin(tmp_path / "cityscapes")


def run(run_zoo, out, checkpoint, *args):
    return run_zoo("run", "--model", "fastscnn", "--weights", checkpoint, "--batch-sizes", "1", "--iters", "1",
                   "--warmup", "0", "--out", out, *args)


def test_missing_data_folder(run_zoo, out, checkpoint, tmp_path):
    missing = tmp_path / "nowhere"
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", missing), out, missing, "data folder not found")


def test_not_a_cityscapes_folder(run_zoo, out, checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", tmp_path / "empty"), out, "not a Cityscapes folder")


def test_missing_label_names_the_image(run_zoo, out, checkpoint, sample):
    for p in (sample / GT_DIR).glob(f"{SAMPLE_NAME}_gtFine_label*.png"):
        p.unlink()
    proc = run(run_zoo, out, checkpoint, "--data", sample)
    assert_clean_failure(proc, out, sample / IMG_REL, "no label for this image")


@pytest.mark.parametrize("which", ["image", "label"])
def test_truncated_png(run_zoo, out, checkpoint, sample, which):
    victim = sample / IMG_REL if which == "image" else sample / GT_DIR / f"{SAMPLE_NAME}_gtFine_labelIds.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", sample), out, victim, "unreadable or truncated")


def test_mixed_image_sizes(run_zoo, out, checkpoint, tmp_path):
    names = ["bonn_000000_000019", "bonn_000001_000019"]
    tree = synthetic_tree(tmp_path / "cs", names, size=(128, 256), sizes={names[1]: (64, 128)})
    proc = run(run_zoo, out, checkpoint, "--data", tree)
    assert_clean_failure(proc, out, f"{names[1]}_leftImg8bit.png: image is 128x64", "one run evaluates one image size")


def test_order_file_with_an_unknown_name(run_zoo, out, checkpoint, sample, tmp_path):
    ids = tmp_path / "sort.log"
    ids.write_text(f"{SAMPLE_NAME}_leftImg8bit.png\nlindau_000099_000019_leftImg8bit.png\n")
    proc = run(run_zoo, out, checkpoint, "--data", sample, "--ids-file", ids)
    assert_clean_failure(proc, out, f"{ids}: 1 of 2 listed samples have no image", ": lindau_000099_000019")


def test_wrong_keys(run_zoo, out, checkpoint, tmp_path):
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sd.pop("auxlayer1.4.bias")
    sd["global_feature_extractor.ppm.convs.0.conv.weight"] = torch.zeros(16, 128, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    last = assert_clean_failure(run(run_zoo, out, bad), out, bad, "does not match the model")
    assert "1 missing: auxlayer1.4.bias" in last
    assert "global_feature_extractor.ppm.convs.0.conv.weight [16, 128, 1, 1] != [32, 128, 1, 1]" in last


def test_wrong_md5(run_zoo, out, checkpoint):
    proc = run(run_zoo, out, checkpoint, "--md5", "efc7247270298f3f57e88375011b52ee")
    assert_clean_failure(proc, out, checkpoint, "md5 mismatch", "expected efc7247270298f3f57e88375011b52ee")


def test_bad_option(run_zoo, out, checkpoint):
    proc = run(run_zoo, out, checkpoint, "--option", "ppm=adaptive")
    assert_clean_failure(proc, out, "option ppm must be one of exact, guide_avgpool")


def test_guide_avgpool_on_too_small_images_is_a_clear_error(run_zoo, out, checkpoint):
    """The built-in 256x128 image gives a 4x8 PPM input: the guide's AvgPool cannot have 6 bins
    (refused before any work, naming the data and its size)."""
    proc = run(run_zoo, out, checkpoint, "--option", "ppm=guide_avgpool")
    assert_clean_failure(proc, out, "zoo/samples/cityscapes: images are 128x256 (HxW)", "fewer than bin 6",
                         "use ppm=exact")


def test_label_ids_out_of_range_are_ignored_not_fatal(tmp_path):
    """Not an error: labelIds outside 0..33 (e.g. 255) are unlabelled pixels, like upstream's -1."""
    from zoo.manifest import load_manifest
    tree = synthetic_tree(tmp_path / "cs", ["bonn_000000_000019"], size=(4, 8))
    from PIL import Image
    Image.fromarray(np.full((4, 8), 255, np.uint8), "L").save(tree / GT_DIR.replace("frankfurt", "bonn") /
                                                               "bonn_000000_000019_gtFine_labelIds.png")
    from zoo.datasets import open_source
    src = open_source(load_manifest("fastscnn"), tree, None, None, tmp_path / "c")
    assert (src.read("bonn_000000_000019").label == 255).all()


# ------------------------------------------------------------------ dataset hardening (issue 11)

def test_huge_image_header(run_zoo, out, checkpoint, sample):
    huge_png(sample / IMG_REL)
    proc = run(run_zoo, out, checkpoint, "--data", sample)
    assert_clean_failure(proc, out, sample / IMG_REL, "40000x40000", "2^30")


def test_label_ids_outside_the_table(run_zoo, out, checkpoint, sample):
    from PIL import Image
    victim = sample / GT_DIR / f"{SAMPLE_NAME}_gtFine_labelIds.png"
    lab = np.array(Image.open(victim))
    lab[3, 4] = 250
    Image.fromarray(lab).save(victim)
    proc = run(run_zoo, out, checkpoint, "--data", sample)
    assert_clean_failure(proc, out, victim, "labelId values [250] are outside the Cityscapes label table")


def test_order_file_same_sample_twice_in_two_spellings(run_zoo, out, checkpoint, sample, tmp_path):
    ids = tmp_path / "sort.log"
    ids.write_text(f"{SAMPLE_NAME}\n# the guide's sort.log form\nfrankfurt/{SAMPLE_NAME}_leftImg8bit.png\n")
    proc = run(run_zoo, out, checkpoint, "--data", sample, "--ids-file", ids)
    assert_clean_failure(proc, out, f"{ids}: duplicate ids: lines 1 and 3", f"are both {SAMPLE_NAME}")

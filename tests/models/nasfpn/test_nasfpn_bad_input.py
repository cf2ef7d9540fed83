"""Bad COCO input (issue 11): annotation files with missing or wrong parts, file names leaving the
images folder, the same image twice in an ids file, images whose header declares more than 2^30
pixels, and output options (results_json, visualize) that cannot be written -- each a one-line
error naming the file and the entry, exit 2, no result, and for the outputs: before inference.

The dataset checks run through the source as the run opens it (zoo.datasets.open_source, then the
adapter's check_source: no weights needed, fast); the rest through the CLI."""
from __future__ import annotations

import json
import struct

import pytest

from tests.zootest import assert_clean_failure
from zoo.datasets import open_source
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import copy_builtin

ANN = "annotations/instances_val2017.json"


def run(run_zoo, out, checkpoint, *args):
    return run_zoo("run", "--model", "nasfpn", "--weights", checkpoint, "--batch-sizes", "1", "--iters", "1",
                   "--warmup", "0", "--no-peak", "--out", out, *args)


@pytest.fixture
def coco(tmp_path):
    return copy_builtin(tmp_path / "coco")


def _damage(coco, fn) -> None:
    ann = coco / ANN
    data = json.loads(ann.read_text())
    fn(data)
    ann.write_text(json.dumps(data))


def _open(coco, ids_file=None, **options):
    manifest = load_manifest("nasfpn")
    source = open_source(manifest, coco, ids_file, None, coco.parent / "cache")
    manifest.adapter(**options).check_source(source)
    return source


@pytest.mark.parametrize("damage, needle", [
    (lambda d: d.pop("images"), "no 'images' list"),
    (lambda d: d.update(annotations="none"), "'annotations' must be a list, got str"),
    (lambda d: d["images"][2].pop("width"), "images[2] (id 343934) has no 'width'"),
    (lambda d: d["images"][0].pop("height"), "images[0] (id 128372) has no 'height'"),
    (lambda d: d["images"][4].pop("file_name"), "images[4] (id 464689) has no 'file_name'"),
    (lambda d: d["annotations"][0].pop("area"), "annotations[0]"),
])
def test_annotation_structure(coco, damage, needle):
    _damage(coco, damage)
    with pytest.raises(ZooError) as exc:
        _open(coco)
    msg = str(exc.value)
    assert msg.startswith(f"{coco / ANN}: ") and needle in msg and "\n" not in msg, msg


def test_annotation_file_not_utf8(coco):
    (coco / ANN).write_bytes(b'{"images": "caf\xe9"}')
    with pytest.raises(ZooError, match="not a COCO instances file") as exc:
        _open(coco)
    assert str(exc.value).startswith(str(coco / ANN))


def test_file_name_leaving_the_images_folder(run_zoo, out, checkpoint, coco, tmp_path):
    """A `../` file name used to read (and with visualize, draw) a file outside the data root."""
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((coco / "val2017" / "000000128372.jpg").read_bytes())
    _damage(coco, lambda d: d["images"][0].update(file_name="../../outside.jpg"))
    proc = run(run_zoo, out, checkpoint, "--data", coco)
    assert_clean_failure(proc, out, coco / ANN, "images[0] (id 128372)", "'../../outside.jpg'",
                         "leaves the images folder")


def test_same_image_twice_in_two_spellings(run_zoo, out, checkpoint, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("128372\n404249\n000000128372.jpg\n")
    proc = run(run_zoo, out, checkpoint, "--ids-file", ids)
    assert_clean_failure(proc, out, f"{ids}: duplicate ids: lines 1 and 3",
                         "'000000128372.jpg' and '128372' are both 128372")


def test_ids_file_entries_are_plain_names(coco, tmp_path):
    ids = tmp_path / "ids.txt"
    for text, needle in (("../val2017/000000128372.jpg", "line 1: COCO image '../val2017/000000128372.jpg' "
                                                         "contains a path separator"),
                         ("128372\n\u0661\u0662\n", "line 2: not a COCO image id or file name"),
                         ("128372\n999999\n", "line 2: image id 999999 is not in")):
        ids.write_text(text)
        with pytest.raises(ZooError) as exc:
            _open(coco, ids)
        assert str(exc.value).startswith(f"{ids}: {needle}"), str(exc.value)


def _sof_offset(data: bytes) -> int:
    """Where the JPEG's frame header (SOFn) segment starts, walking the segments from SOI (a plain
    search can hit the bytes ff c0 inside an embedded thumbnail first)."""
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return i


def test_huge_image_header(run_zoo, out, checkpoint, coco):
    img = coco / "val2017" / "000000194216.jpg"   # its Photoshop block holds ff c0 before the real SOF0
    data = bytearray(img.read_bytes())
    sof = _sof_offset(data)
    assert sof > data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    img.write_bytes(bytes(data))
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", coco), out, img, "60000x60000", "2^30")


@pytest.mark.parametrize("option", ["results_json", "visualize"])
def test_unwritable_output_option_fails_before_inference(run_zoo, out, checkpoint, tmp_path, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder would have to be")
    target = blocker / "sub" / ("dets.json" if option == "results_json" else "vis")
    proc = run(run_zoo, out, checkpoint, "--option", f"{option}={target}")
    folder = target.parent if option == "results_json" else target
    assert_clean_failure(proc, out, folder, f"cannot create the folder for option {option}")
    assert "[3/7]" not in proc.stderr  # refused when the dataset was opened: no export, no inference


def test_output_option_pointing_at_the_wrong_kind(coco, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ZooError, match="results_json needs a file name, this is a folder"):
        _open(coco, results_json=str(folder))
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(ZooError, match="visualize needs a folder, this is a file"):
        _open(coco, visualize=str(file))
    # the existing behaviour stays: missing parent folders are created
    _open(coco, results_json=str(tmp_path / "new" / "deeper" / "dets.json"), visualize=str(tmp_path / "v" / "w"))
    assert (tmp_path / "new" / "deeper").is_dir() and (tmp_path / "v" / "w").is_dir()
    assert list((tmp_path / "new" / "deeper").iterdir()) == []  # the write check leaves nothing behind

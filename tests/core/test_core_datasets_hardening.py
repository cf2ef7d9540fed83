"""Dataset readers against hostile input: ids files (paths, NUL bytes, encodings, duplicates after
normalisation), names that leave their root, images whose header declares more than 2^30 pixels,
failed image writes, DSB2018 masks and file names, COCO annotation structure (Cityscapes:
test_core_cityscapes.py). Real files only; every error is one line naming the file (and line or
entry)."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.zootest import huge_png, png_chunk as _chunk
from zoo.datasets.coco import check_instances, parse_image_id
from zoo.errors import ZooError
from zoo.ids import is_utf8_name, path_inside, read_id_lines, read_ids, shown
from zoo.images import MAX_PIXELS, check_pixels, header_size, imread, imwrite

BUILTIN_COCO = Path(__file__).resolve().parents[2] / "zoo" / "samples" / "coco"


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    text.encode("utf-8")  # printable whatever the file names held
    return text


# ------------------------------------------------------------------ huge headers, written small

def huge_jpeg(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A real small JPEG whose SOF0 frame header is rewritten to declare width x height."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def test_header_size_of_real_files(tmp_path):
    png = tmp_path / "a.png"
    jpg = tmp_path / "a.jpg"
    assert cv2.imwrite(str(png), np.zeros((7, 13), np.uint8))
    assert cv2.imwrite(str(jpg), np.zeros((9, 11, 3), np.uint8))
    assert header_size(png) == (13, 7) and header_size(jpg) == (11, 9)
    assert header_size(huge_png(tmp_path / "h.png", 70000, 20000)) == (70000, 20000)
    assert header_size(huge_jpeg(tmp_path / "h.jpg", 50000, 30000)) == (50000, 30000)
    (tmp_path / "t.txt").write_text("not an image")
    assert header_size(tmp_path / "t.txt") is None and header_size(tmp_path / "missing.png") is None


@pytest.mark.parametrize("make", [huge_png, huge_jpeg])
def test_imread_refuses_a_huge_header(tmp_path, make):
    path = make(tmp_path / ("big.png" if make is huge_png else "big.jpg"))
    assert path.stat().st_size < 2000
    w, h = header_size(path)
    with pytest.raises(ZooError) as exc:
        imread(path, cv2.IMREAD_COLOR)
    msg = one_line(exc)
    assert msg.startswith(f"{path}: ") and f"{w}x{h}" in msg and "2^30" in msg
    with pytest.raises(ZooError, match=f"{w}x{h}"):
        check_pixels(path)


def test_limit_is_pixels_not_file_size(tmp_path):
    # exactly 2^30 pixels passes the header check (and is then judged by the decoder)
    edge = huge_png(tmp_path / "edge.png", 1 << 15, 1 << 15)
    assert (1 << 15) ** 2 == MAX_PIXELS
    check_pixels(edge)
    with pytest.raises(ZooError, match="32768x32769"):
        check_pixels(huge_png(tmp_path / "over.png", 1 << 15, (1 << 15) + 1))


def test_imread_decoder_refusal_is_one_line(tmp_path):
    # a header this reader does not parse (PNG signature, IHDR not first): OpenCV's own limit
    # raises cv2.error, which must still end as one line naming the file
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path = tmp_path / "odd.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"a\0b") + _chunk(b"IHDR", ihdr)
                     + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    with pytest.raises(ZooError) as exc:
        imread(path)
    assert one_line(exc).startswith(f"{path}: ")


# ------------------------------------------------------------------ checked image writes

def test_imwrite_failure_names_the_file(tmp_path):
    img = np.zeros((4, 4), np.uint8)
    in_the_way = tmp_path / "x.png"
    in_the_way.mkdir()                       # a folder where the file should go (fails even as root)
    with pytest.raises(ZooError, match=r"cannot write the image \(Is a directory\)") as exc:
        imwrite(in_the_way, img)
    assert one_line(exc).startswith(f"{in_the_way}: ")
    with pytest.raises(ZooError, match=r"cannot write the image \(No such file or directory\)"):
        imwrite(tmp_path / "no" / "such" / "x.png", img)
    with pytest.raises(ZooError, match="cannot encode the image"):
        imwrite(tmp_path / "x.unknownext", img)
    assert not (tmp_path / "x.unknownext").exists()
    # the same bytes as cv2.imwrite, also where the folder's name is not UTF-8
    ref = tmp_path / "ref.png"
    assert cv2.imwrite(str(ref), np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    imwrite(odd / "ok.png", np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    assert (odd / "ok.png").read_bytes() == ref.read_bytes()


# ------------------------------------------------------------------ ids files

def _ids(tmp_path, data: bytes, name="ids.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("entry, problem", [
    ("../x", "path separator"),
    ("a/b", "path separator"),
    ("..\\x", "path separator"),
    ("/etc/passwd", "absolute path"),
    ("..", "not a name"),
])
def test_ids_must_be_plain_names(tmp_path, entry, problem):
    p = _ids(tmp_path, f"# header\nabc\n\n{entry}\n".encode())
    with pytest.raises(ZooError, match=problem) as exc:
        read_ids(p)
    assert one_line(exc).startswith(f"{p}: line 4: ")


def test_ids_nul_byte(tmp_path):
    p = _ids(tmp_path, b"abc\nde\0f\n")
    with pytest.raises(ZooError, match="line 2: contains a NUL byte"):
        read_ids(p)


def test_ids_file_not_utf8(tmp_path):
    p = _ids(tmp_path, "abc\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ZooError, match=r"line 2: not UTF-8 text \(byte 0xe9 at column 4\)") as exc:
        read_ids(p)
    assert one_line(exc).startswith(str(p))


def test_ids_file_with_a_non_utf8_name(tmp_path):
    p = _ids(tmp_path, "x\n".encode(), name=os.fsdecode(b"ids-\xe9.txt"))
    with pytest.raises(ZooError, match="not found") as exc:
        read_ids(tmp_path / os.fsdecode(b"gone-\xff.txt"))
    assert "gone-\\xff.txt" in one_line(exc)
    assert read_ids(p) == ["x"]


def test_ids_bom_crlf_and_unicode_names(tmp_path):
    p = _ids(tmp_path, "\ufeffabc\r\nz\u00fcrich_1\r\n".encode())
    assert read_ids(p) == ["abc", "z\u00fcrich_1"]
    assert read_id_lines(p) == [(1, "abc"), (2, "z\u00fcrich_1")]


def test_duplicates_after_normalisation_name_both_lines(tmp_path):
    p = _ids(tmp_path, b"397133\n128372\n# note\n000000128372.jpg\n")
    with pytest.raises(ZooError, match=r"duplicate ids: lines 2 and 4") as exc:
        read_ids(p, parse_image_id)
    assert "'000000128372.jpg' and '128372' are both 128372" in one_line(exc)
    q = _ids(tmp_path, b"a\nb\na\n", name="dup.txt")
    with pytest.raises(ZooError, match=r"duplicate ids: lines 1 and 3"):
        read_ids(q)


def test_normalize_error_gets_file_and_line(tmp_path):
    p = _ids(tmp_path, b"397133\nval2017/000000128372.jpg\n")
    with pytest.raises(ZooError, match=r"line 2: COCO image 'val2017/000000128372.jpg' contains a path separator"):
        read_ids(p, parse_image_id)
    for bad in ("12a", "-5", "\u0661\u0662", "1_000"):   # not plain ASCII digits (int() accepts some)
        with pytest.raises(ZooError, match="not a COCO image id"):
            parse_image_id(bad)
    assert parse_image_id("000000128372.jpg") == parse_image_id("128372") == 128372


# ------------------------------------------------------------------ names and roots

def test_path_inside(tmp_path):
    root = tmp_path / "root"
    assert path_inside(root, "a.jpg") == root / "a.jpg"
    assert path_inside(root, "sub/a.jpg") == root / "sub" / "a.jpg"
    assert path_inside(root, "sub/../a.jpg") is not None
    for bad in ("../a.jpg", "sub/../../a.jpg", "/etc/passwd", "a\0b", "", ".", "sub/.."):
        assert path_inside(root, bad) is None, bad


def test_shown_makes_undecodable_names_printable():
    name = os.fsdecode(b"/data/caf\xe9/x.png")
    assert not is_utf8_name(name) and is_utf8_name("/data/caf\u00e9")
    assert shown(name) == "/data/caf\\xe9/x.png"
    assert shown(Path(name)) == "/data/caf\\xe9/x.png"
    assert shown("caf\u00e9") == "caf\u00e9"


# ------------------------------------------------------------------ COCO annotation structure

def _coco():
    return json.loads((BUILTIN_COCO / "annotations" / "instances_val2017.json").read_text())


def test_builtin_coco_annotations_pass():
    check_instances(_coco(), "ann.json")


@pytest.mark.parametrize("damage, needle", [
    (lambda d: d.pop("images"), "no 'images' list"),
    (lambda d: d.update(annotations={"a": 1}), "'annotations' must be a list, got dict"),
    (lambda d: d.pop("categories"), "no 'categories' list"),
    (lambda d: d["images"][1].pop("width"), "images[1] (id 404249) has no 'width'"),
    (lambda d: d["images"][2].pop("height"), "images[2] (id 343934) has no 'height'"),
    (lambda d: d["images"][0].pop("file_name"), "images[0] (id 128372) has no 'file_name'"),
    (lambda d: d["images"][0].update(width="640"), "'width' '640', not a positive integer"),
    (lambda d: d["images"][0].update(file_name="../secret.jpg"), "'../secret.jpg', which leaves the images folder"),
    (lambda d: d["images"][0].update(file_name="/etc/x.jpg"), "leaves the images folder"),
    (lambda d: d["images"][0].update(file_name="a\0.jpg"), "leaves the images folder"),
    (lambda d: d["images"][0].pop("id"), "images[0] has no 'id'"),
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "images[0] and images[1] have the same id 128372"),
    (lambda d: d["images"].append(7), "images[5] is not an object"),
    (lambda d: d["annotations"][3].pop("bbox"), "annotations[3]"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "not [x, y, width, height] numbers"),
    (lambda d: d["annotations"][0].pop("area"), "has no 'area'"),
    (lambda d: d["annotations"][0].update(iscrowd=2), "'iscrowd' 2, not 0 or 1"),
    (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]), "annotations[0] and annotations[1] have the same id"),
    (lambda d: d["categories"][4].pop("name"), "categories[4] (id 5) has no 'name'"),
])
def test_coco_structure_errors(damage, needle):
    data = _coco()
    damage(data)
    with pytest.raises(ZooError) as exc:
        check_instances(data, "ann.json")
    msg = one_line(exc)
    assert msg.startswith("ann.json: ") and needle in msg, msg


def test_coco_top_level_not_an_object():
    with pytest.raises(ZooError, match="not a JSON object"):
        check_instances([], "ann.json")



# ------------------------------------------------------------------ DSB2018 (the source read directly)

BUILTIN_DSB = Path(__file__).resolve().parents[2] / "zoo" / "samples" / "dsb2018"


def _dsb_copy(tmp_path, n=2) -> tuple[Path, list[str]]:
    """A writable copy of the first n built-in DSB2018 ids, with their ids file."""
    import shutil
    ids = read_ids(BUILTIN_DSB / "builtin_ids.txt")[:n]
    root = tmp_path / "dsb"
    for sid in ids:
        shutil.copytree(BUILTIN_DSB / "stage1_train" / sid, root / "stage1_train" / sid)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    return root, ids


def _open_dsb(root, cache):
    from zoo.datasets import open_source
    from zoo.manifest import load_manifest
    return open_source(load_manifest("unetpp"), root, root / "ids.txt", None, cache)


def test_dsb2018_mask_of_another_size_names_the_mask(tmp_path):
    root, ids = _dsb_copy(tmp_path)
    mask = sorted((root / "stage1_train" / ids[1] / "masks").glob("*.png"))[0]
    h, w = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).shape
    assert cv2.imwrite(str(mask), np.zeros((h + 1, w), np.uint8))
    with pytest.raises(ZooError) as exc:
        _open_dsb(root, tmp_path / "cache")
    assert one_line(exc) == f"{mask}: mask is {w}x{h + 1}, image is {w}x{h}"
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name in ("DONE", ".zoo-entry.json")]


def test_dsb2018_file_names_that_are_not_text_are_refused_before_any_work(tmp_path):
    root, ids = _dsb_copy(tmp_path)
    mdir = root / "stage1_train" / ids[0] / "masks"
    sorted(mdir.glob("*.png"))[0].rename(mdir / os.fsdecode(b"caf\xe9.png"))
    with pytest.raises(ZooError) as exc:
        _open_dsb(root, tmp_path / "cache")
    assert one_line(exc) == f"{mdir}/caf\\xe9.png: file name is not UTF-8; rename it"
    assert not (tmp_path / "cache").exists()        # refused while fingerprinting: nothing prepared

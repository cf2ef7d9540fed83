"""Bad input through the real CLI: exit 2, one line naming the file and the problem, no result."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.zootest import assert_clean_failure

from .conftest import PALETTE, copy_builtin

LABEL = "VOC2012/SegmentationClass/2007_000033.png"


@pytest.fixture
def voc(tmp_path):
    return copy_builtin(tmp_path / "VOCdevkit")


def run(run_zoo, out, checkpoint, *args):
    return run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--batch-sizes", "1", "--iters", "1",
                   "--warmup", "0", "--out", out, *args)


def test_missing_label(run_zoo, out, checkpoint, voc):
    (voc / LABEL).unlink()
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc), out, voc / LABEL, "missing")


def test_palette_png_with_unexpected_values(run_zoo, out, checkpoint, voc):
    lab = np.array(Image.open(voc / LABEL))
    lab[10:20, 10:20] = 77
    im = Image.fromarray(lab, "P")
    im.putpalette(PALETTE)
    im.save(voc / LABEL)
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc), out, LABEL.rsplit("/", 1)[1],
                         "unexpected label values [77]")


def test_corrupt_image(run_zoo, out, checkpoint, voc):
    img = voc / "VOC2012/JPEGImages/2007_000033.jpg"
    img.write_bytes(img.read_bytes()[:200])
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc), out, img.name, "unreadable or truncated")


def test_id_listed_but_image_missing(run_zoo, out, checkpoint, voc, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("2007_000033\n2009_999999\n")
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc, "--ids-file", ids), out,
                         "2009_999999.jpg", "missing")


def test_not_a_vocdevkit(run_zoo, out, checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", tmp_path / "empty"), out, "not a VOCdevkit")


def test_upstream_protocol_refuses_batches(run_zoo, out, checkpoint):
    proc = run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--option", "protocol=upstream",
                   "--batch-sizes", "1,4", "--out", out)
    assert_clean_failure(proc, out, "batch sizes above 1 are not possible")


def test_wrong_checkpoint_checksum_for_the_official_file_name(run_zoo, out, checkpoint, tmp_path):
    """A local file named like the official checkpoint is checked against its published md5."""
    fake = tmp_path / "fcn_r50-d8_512x512_20k_voc12aug_20200617_010715-52dc5306.pth"
    fake.write_bytes(checkpoint.read_bytes())
    assert_clean_failure(run(run_zoo, out, fake), out, fake.name, "mismatch")


# ------------------------------------------------------------------ dataset hardening (issue 11)

def _huge_header(path, width=60000, height=60000):
    """Rewrite the size a real PNG's IHDR or JPEG's SOF0 declares (a few KB file, a huge header)."""
    import struct
    import zlib
    data = bytearray(path.read_bytes())
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    else:  # walk the JPEG segments to the frame header (SOF0-2)
        sof = 2
        while data[sof + 1] not in (0xC0, 0xC1, 0xC2):
            sof += 2 + int.from_bytes(data[sof + 2:sof + 4], "big")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["VOC2012/JPEGImages/2007_000033.jpg", LABEL])
def test_huge_image_header(run_zoo, out, checkpoint, voc, victim):
    _huge_header(voc / victim)
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc), out, voc / victim, "60000x60000", "2^30")


@pytest.mark.parametrize("content, needle", [
    (b"2007_000033\n../JPEGImages/2007_000032\n", "line 2: id '../JPEGImages/2007_000032' contains a path separator"),
    (b"2007_000033\n/etc/passwd\n", "line 2: id '/etc/passwd' is an absolute path"),
    ("2007_000033\n2007_\u00e9\n".encode("latin-1"), "line 2: not UTF-8 text"),
])
def test_bad_ids_file(run_zoo, out, checkpoint, voc, tmp_path, content, needle):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(content)
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", voc, "--ids-file", ids), out, f"{ids}: {needle}")

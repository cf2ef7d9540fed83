"""zoo.datasets.cityscapes: the real Cityscapes layout (pairing by name, order, limit, errors), the
labelId -> trainId table against an independently written copy of cityscapesScripts' table, reading
labels, the Cityscapes source (read, read_label, shards, provenance) and the built-in 256x128 sample."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from zoo.datasets import cityscapes as cs
from zoo.datasets.base import Opened
from zoo.errors import ZooError
from zoo.ids import read_ids

# The source decodes images with Pillow (upstream's reader), installed in the Cityscapes models'
# environments; the core tests also run in the others, where these few are skipped.
needs_pil = pytest.mark.skipif(__import__("importlib.util").util.find_spec("PIL") is None,
                               reason="Pillow (the Cityscapes image reader) is not in this environment; "
                                      "the erfnet/fastscnn environments run this test")

SAMPLE = Path(cs.__file__).resolve().parents[1] / "samples" / "cityscapes"
SAMPLE_NAME = "frankfurt_000000_000294"

# cityscapesScripts `labels.py`, written out here independently of zoo.datasets.cityscapes:
# (name, labelId, trainId); trainId 255 = not evaluated.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9),
    ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14),
    ("bus", 28, 15), ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16),
    ("motorcycle", 32, 17), ("bicycle", 33, 18),
]
EXPECTED_TRAIN = {label_id: train_id for _, label_id, train_id in CITYSCAPES_LABELS}


# ------------------------------------------------------------------ tree builder

def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def _image(root: Path, name: str, split: str = "val", value: int = 0) -> Path:
    city = name.split("_")[0]
    img = np.full((8, 16, 3), value, np.uint8)
    return _png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", img)


def _label(root: Path, name: str, kind: str, array: np.ndarray, split: str = "val") -> Path:
    city = name.split("_")[0]
    return _png(root / "gtFine" / split / city / f"{name}{cs.LABEL_KINDS[kind]}", array)


def _label_ids(seed: int, shape=(8, 16)) -> np.ndarray:
    """Every labelId 0..33 at least once (plus random ones)."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 34, size=shape, dtype=np.uint8)
    lab.flat[:34] = np.arange(34, dtype=np.uint8)
    return lab


def _expected_train(label_ids: np.ndarray) -> np.ndarray:
    """labelIds -> trainIds through the table in this file (pixel by pixel)."""
    out = np.empty_like(label_ids)
    for idx, v in np.ndenumerate(label_ids):
        out[idx] = EXPECTED_TRAIN.get(int(v), 255)
    return out


# Two cities; each sample's labelTrainIds is a constant that identifies it, so a wrong pairing
# shows. The extra label without an image ("frankfurt_000000_000200") shifts the sort position of
# every later label relative to the images: pairing by position would be wrong from there on.
TREE = {  # name -> identifying trainId
    "frankfurt_000000_000100": 1,
    "frankfurt_000000_000300": 2,
    "frankfurt_000001_000050": 3,
    "lindau_000000_000019": 4,
    "lindau_000001_000019": 5,
}
ORPHAN_LABEL = "frankfurt_000000_000200"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    for i, (name, tid) in enumerate(TREE.items()):
        _image(root, name, value=10 * i)
        _label(root, name, "labelTrainIds", np.full((8, 16), tid, np.uint8))
    _label(root, ORPHAN_LABEL, "labelTrainIds", np.full((8, 16), 17, np.uint8))
    # labelIds for some samples only
    _label(root, "frankfurt_000000_000300", "labelIds", _label_ids(3))
    _label(root, "lindau_000000_000019", "labelIds", _label_ids(4))
    # files that must be ignored: other gtFine kinds, another split, a stray file
    _png(root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000100_gtFine_color.png",
         np.zeros((8, 16, 3), np.uint8))
    _image(root, "frankfurt_000009_000009", split="train")
    (root / "leftImg8bit" / "val" / "frankfurt" / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ find_files

def test_pairs_by_name_not_by_sort_position(tree: Path):
    samples = cs.find_files(tree)
    assert [s.name for s in samples] == list(TREE)           # the orphan label is not a sample
    # sorted label files: the orphan sits at position 1, so positional pairing would give
    # frankfurt_000000_000300 the orphan's label
    labels = sorted((tree / "gtFine" / "val").glob("*/*_gtFine_labelTrainIds.png"))
    images = sorted((tree / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    assert labels[1].name.startswith(ORPHAN_LABEL) and images[1].name.startswith("frankfurt_000000_000300")
    for s in samples:
        assert s.image.name == f"{s.name}_leftImg8bit.png"
        assert s.city == s.name.split("_")[0] == s.image.parent.name
        assert s.labels["labelTrainIds"].name == f"{s.name}_gtFine_labelTrainIds.png"
        lab, kind = cs.read_train_ids(s)
        assert kind == "labelTrainIds"
        assert np.all(lab == TREE[s.name]), s.name


def test_labels_only_the_kinds_that_exist(tree: Path):
    by_name = {s.name: s for s in cs.find_files(tree)}
    assert set(by_name["frankfurt_000000_000300"].labels) == {"labelIds", "labelTrainIds"}
    assert set(by_name["frankfurt_000000_000100"].labels) == {"labelTrainIds"}   # _color ignored
    for s in by_name.values():
        assert all(p.is_file() for p in s.labels.values())


def test_sorted_by_city_then_name(tmp_path: Path):
    root = tmp_path / "cs"
    # written in scrambled order; "aachen" sorts before "zurich" whatever the frame numbers
    names = ["zurich_000000_000001", "aachen_000010_000019", "aachen_000002_000019", "zurich_000000_000000"]
    for n in names:
        _image(root, n)
        _label(root, n, "labelIds", np.zeros((8, 16), np.uint8))
    got = [(s.city, s.name) for s in cs.find_files(root)]
    assert got == [("aachen", "aachen_000002_000019"), ("aachen", "aachen_000010_000019"),
                   ("zurich", "zurich_000000_000000"), ("zurich", "zurich_000000_000001")]


def test_explicit_order(tree: Path):
    order = ["lindau_000001_000019", "frankfurt_000000_000300", "frankfurt_000000_000100"]
    samples = cs.find_files(tree, order=order)
    assert [s.name for s in samples] == order                # a subset, in the given order
    assert [cs.read_train_ids(s)[0][0, 0] for s in samples] == [5, 2, 1]


def test_order_naming_a_missing_image(tree: Path):
    with pytest.raises(ZooError, match=r"1 of 2 listed samples have no image .*_leftImg8bit\.png: "
                                       r"frankfurt_000000_000200$"):
        cs.find_files(tree, order=["frankfurt_000000_000100", ORPHAN_LABEL])
    with pytest.raises(ZooError, match=r"2 of 3 .*: frankfurt_000000_000200, munster_000000_000019$"):
        cs.find_files(tree, order=[ORPHAN_LABEL, "munster_000000_000019", "lindau_000000_000019"])
    many = [f"munster_000000_{i:06d}" for i in range(7)]
    with pytest.raises(ZooError, match=r"7 of 7 .*munster_000000_000004 \(\+2 more\)$"):
        cs.find_files(tree, order=many)


def test_image_without_label_names_the_image(tree: Path):
    img = _image(tree, "lindau_000002_000019")
    with pytest.raises(ZooError, match="no label for this image") as exc:
        cs.find_files(tree)
    assert str(exc.value).startswith(str(img))
    assert "\n" not in str(exc.value)


def test_not_a_cityscapes_folder(tmp_path: Path):
    root = tmp_path / "dsb2018"
    (root / "stage1_train" / "abc" / "images").mkdir(parents=True)
    with pytest.raises(ZooError, match="not a Cityscapes folder") as exc:
        cs.find_files(root)
    assert str(root / "leftImg8bit" / "val") in str(exc.value)
    # the right folders but another split only
    _image(tmp_path / "cs", "aachen_000000_000019", split="train")
    with pytest.raises(ZooError, match="not a Cityscapes folder"):
        cs.find_files(tmp_path / "cs", split="val")


def test_split_without_images(tmp_path: Path):
    (tmp_path / "cs" / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    with pytest.raises(ZooError, match=r"no \*_leftImg8bit\.png images"):
        cs.find_files(tmp_path / "cs")


def test_missing_folder(tmp_path: Path):
    with pytest.raises(ZooError, match="data folder not found") as exc:
        cs.find_files(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)


def test_other_split(tree: Path):
    with pytest.raises(ZooError, match="frankfurt_000009_000009_leftImg8bit.png: no label"):
        cs.find_files(tree, split="train")                  # its image has no label yet
    _label(tree, "frankfurt_000009_000009", "labelIds", np.full((8, 16), 26, np.uint8), split="train")
    samples = cs.find_files(tree, split="train")
    assert [s.name for s in samples] == ["frankfurt_000009_000009"]
    assert np.all(cs.read_train_ids(samples[0])[0] == 13)     # car


# ------------------------------------------------------------------ the labelId -> trainId table

def test_independent_table_matches_class_names():
    evaluated = sorted((t, n) for n, _, t in CITYSCAPES_LABELS if t != 255)
    assert [n for _, n in evaluated] == list(cs.CLASSES)
    assert [t for t, _ in evaluated] == list(range(19))


@pytest.mark.parametrize("label_id", list(range(34)) + [255])
def test_to_train_ids_every_label_id(label_id: int):
    expected = EXPECTED_TRAIN.get(label_id, 255)
    got = cs.to_train_ids(np.array([[label_id]], np.uint8))
    assert got.dtype == np.uint8 and got.shape == (1, 1)
    assert int(got[0, 0]) == expected


def test_to_train_ids_whole_range_and_custom_ignore():
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = cs.to_train_ids(ids)
    assert np.array_equal(got, _expected_train(ids))
    assert np.all(got.ravel()[34:] == 255)
    got19 = cs.to_train_ids(ids, ignore=19)
    assert np.array_equal(got19, np.where(got == 255, 19, got))
    with pytest.raises(ValueError, match="uint8"):
        cs.to_train_ids(ids.astype(np.int32))


# ------------------------------------------------------------------ read_train_ids

def _sample(root: Path, name: str) -> cs.Files:
    return {s.name: s for s in cs.find_files(root)}[name]


def test_prefers_the_requested_kind(tmp_path: Path):
    root, name = tmp_path / "cs", "frankfurt_000000_000019"
    _image(root, name)
    ids = _label_ids(7)
    _label(root, name, "labelIds", ids)
    _label(root, name, "labelTrainIds", np.full(ids.shape, 9, np.uint8))  # deliberately different
    s = _sample(root, name)
    lab, kind = cs.read_train_ids(s)                      # default: labelTrainIds
    assert kind == "labelTrainIds" and np.all(lab == 9)
    lab, kind = cs.read_train_ids(s, prefer="labelIds")
    assert kind == "labelIds" and np.array_equal(lab, _expected_train(ids))


def test_derives_from_label_ids_and_matches_a_train_ids_file(tmp_path: Path):
    root = tmp_path / "cs"
    ids = _label_ids(11, shape=(32, 48))
    # sample A: only labelIds; sample B: the same map as labelTrainIds written from this file's table
    _image(root, "frankfurt_000000_000001")
    _label(root, "frankfurt_000000_000001", "labelIds", ids)
    _image(root, "frankfurt_000000_000002")
    _label(root, "frankfurt_000000_000002", "labelTrainIds", _expected_train(ids))
    a, b = cs.find_files(root)
    derived, kind_a = cs.read_train_ids(a)                # prefer labelTrainIds, only labelIds exist
    written, kind_b = cs.read_train_ids(b, prefer="labelIds")   # only labelTrainIds exist
    assert (kind_a, kind_b) == ("labelIds", "labelTrainIds")
    assert derived.dtype == written.dtype == np.uint8
    assert np.array_equal(derived, written)
    assert set(np.unique(derived).tolist()) == set(range(19)) | {255}


def test_rejects_out_of_range_train_ids(tmp_path: Path):
    root, name = tmp_path / "cs", "frankfurt_000000_000019"
    _image(root, name)
    lab = np.zeros((8, 16), np.uint8)
    lab[2, 3] = 40
    lab[4, 5] = 255                                          # allowed
    path = _label(root, name, "labelTrainIds", lab)
    with pytest.raises(ZooError, match=r"unexpected trainId values \[40\]") as exc:
        cs.read_train_ids(_sample(root, name))
    assert str(exc.value).startswith(str(path))


def test_rejects_rgb_label(tmp_path: Path):
    root, name = tmp_path / "cs", "frankfurt_000000_000019"
    _image(root, name)
    path = _label(root, name, "labelIds", np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(ZooError, match=r"single-channel 8-bit.*\(8, 16, 3\)") as exc:
        cs.read_train_ids(_sample(root, name))
    assert str(exc.value).startswith(str(path))


def test_rejects_16_bit_label(tmp_path: Path):
    root, name = tmp_path / "cs", "frankfurt_000000_000019"
    _image(root, name)
    _label(root, name, "labelTrainIds", np.zeros((8, 16), np.uint16))
    with pytest.raises(ZooError, match="uint16"):
        cs.read_train_ids(_sample(root, name))


@pytest.mark.parametrize("kind", ["labelIds", "labelTrainIds"])
def test_truncated_png_names_the_file(tmp_path: Path, kind: str):
    root, name = tmp_path / "cs", "frankfurt_000000_000019"
    _image(root, name)
    path = _label(root, name, kind, _label_ids(5, shape=(64, 64)) if kind == "labelIds"
                  else np.zeros((64, 64), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="unreadable or truncated") as exc:
        cs.read_train_ids(_sample(root, name))
    assert str(exc.value).startswith(str(path))
    path.write_bytes(b"")                                     # empty file
    with pytest.raises(ZooError, match="unreadable or truncated"):
        cs.read_train_ids(_sample(root, name))


def test_read_png_missing_file(tmp_path: Path):
    with pytest.raises(ZooError, match="cannot read") as exc:
        cs.read_png(tmp_path / "gone.png")
    assert str(tmp_path / "gone.png") in str(exc.value)


# ------------------------------------------------------------------ the real built-in sample

def test_builtin_sample_layout():
    samples = cs.find_files(SAMPLE)
    assert [s.name for s in samples] == [SAMPLE_NAME]
    assert set(samples[0].labels) == {"labelIds", "labelTrainIds"}
    img = cs.read_png(samples[0].image)
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8


def test_builtin_sample_train_ids_agree_with_the_table():
    """The sample's labelTrainIds file (made by cityscapesScripts from the full-size labelIds, then
    downsampled) against to_train_ids(its labelIds file).

    The two 256x128 files were downsampled separately, so they disagree at 77 of 32768 pixels,
    all on class boundaries (each disagreeing value is the mapped value of a pixel at most 2 px
    away). The table itself must agree exactly: for every labelId present, the value the
    labelTrainIds file holds on (nearly) all of its pixels is the table's trainId."""
    s = cs.find_files(SAMPLE)[0]
    label_ids = cs.read_png(s.labels["labelIds"])
    train_file = cs.read_png(s.labels["labelTrainIds"])
    derived = cs.to_train_ids(label_ids)
    assert derived.shape == train_file.shape == (128, 256)
    assert np.array_equal(derived, _expected_train(label_ids))  # zoo table == this file's table

    present = np.unique(label_ids)
    assert len(present) >= 10                                   # evaluated and void ids alike
    assert set(present.tolist()) & {1, 2, 3, 4} and set(present.tolist()) & set(cs.LABEL_TO_TRAIN)
    for label_id in present:
        values, counts = np.unique(train_file[label_ids == label_id], return_counts=True)
        assert values[counts.argmax()] == EXPECTED_TRAIN[int(label_id)], int(label_id)
        assert counts.max() / counts.sum() >= 0.97, int(label_id)

    mismatch = derived != train_file
    assert mismatch.mean() < 0.005
    for y, x in zip(*np.nonzero(mismatch)):                     # boundary resampling only
        window = derived[max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert train_file[y, x] in window, (y, x)

    lab, kind = cs.read_train_ids(s)
    assert kind == "labelTrainIds" and np.array_equal(lab, train_file)
    lab, kind = cs.read_train_ids(s, prefer="labelIds")
    assert kind == "labelIds" and np.array_equal(lab, derived)


def test_order_with_duplicates_and_unknown_prefer(tmp_path):
    import cv2
    import numpy as np

    from zoo.datasets.cityscapes import find_files, read_train_ids
    from zoo.errors import ZooError
    for name in ("aachen_000000_000001", "aachen_000000_000002"):
        img = tmp_path / "leftImg8bit" / "val" / "aachen" / f"{name}_leftImg8bit.png"
        lab = tmp_path / "gtFine" / "val" / "aachen" / f"{name}_gtFine_labelIds.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img), np.zeros((4, 8, 3), np.uint8))
        cv2.imwrite(str(lab), np.full((4, 8), 7, np.uint8))
    with pytest.raises(ZooError, match="listed twice"):
        find_files(tmp_path, order=["aachen_000000_000001", "aachen_000000_000001"])
    # an order selecting a subset does not need labels for the images it leaves out
    (tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000002_gtFine_labelIds.png").unlink()
    (s,) = find_files(tmp_path, order=["aachen_000000_000001"])
    with pytest.raises(ValueError, match="prefer must be one of"):
        read_train_ids(s, prefer="trainIds")


def test_uint8_values_equals_np_unique():
    from zoo.images import uint8_values
    rng = np.random.default_rng(5)
    for arr in (rng.integers(0, 19, (64, 128), dtype=np.uint8), np.full((4, 4), 255, np.uint8),
                np.zeros((0,), np.uint8), np.array([[0, 255], [7, 7]], np.uint8)):
        got = uint8_values(arr)
        np.testing.assert_array_equal(got, np.unique(arr))
        assert got.dtype == np.uint8
    wide = np.array([300, 2, 2, 70000], np.int64)          # not uint8: np.unique itself
    np.testing.assert_array_equal(uint8_values(wide), np.unique(wide))


# ------------------------------------------------------------------ hardening (issue 11)

def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    text.encode("utf-8")  # printable whatever the file names held
    return text


def _cs_tree(root: Path, names: list[str], label_ids: np.ndarray | None = None) -> Path:
    for name in names:
        city = name.split("_")[0]
        img = root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png"
        lab = root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(img), np.zeros((4, 8, 3), np.uint8))
        assert cv2.imwrite(str(lab), label_ids if label_ids is not None else np.full((4, 8), 7, np.uint8))
    return root


def test_cityscapes_missing_ids_are_named_with_the_ids_file(tmp_path):
    root = _cs_tree(tmp_path / "cs", ["aachen_000000_000001"])
    ids = tmp_path / "ids.txt"
    ids.write_text("aachen_000000_000001\nbonn_000000_000002\nbonn_000000_000003\n")
    with pytest.raises(ZooError) as exc:
        cs.find_files(root, order=read_ids(ids), ids_file=ids)
    msg = one_line(exc)
    assert msg.startswith(f"{ids}: 2 of 3 listed samples have no image")
    assert "bonn_000000_000002, bonn_000000_000003" in msg and "no *_leftImg8bit.png images" not in msg
    # none of the listed ids exists: still the ids, not "no images"
    ids.write_text("bonn_000000_000009\n")
    with pytest.raises(ZooError, match=r"1 of 1 listed samples have no image.*bonn_000000_000009"):
        cs.find_files(root, order=read_ids(ids), ids_file=ids)


def test_cityscapes_label_ids_outside_the_table(tmp_path):
    lab = np.full((4, 8), 7, np.uint8)
    lab[1, 2], lab[3, 3] = 250, 34
    root = _cs_tree(tmp_path / "cs", ["aachen_000000_000001"], lab)
    (s,) = cs.find_files(root)
    with pytest.raises(ZooError, match=r"labelId values \[34, 250\] are outside the Cityscapes label table") as exc:
        cs.read_train_ids(s, prefer="labelIds")
    assert one_line(exc).startswith(str(s.labels["labelIds"]))
    lab[1, 2], lab[3, 3], lab[0, 0] = 33, 0, 255               # the table's ends, and -1 as uint8
    assert cv2.imwrite(str(s.labels["labelIds"]), lab)
    train, kind = cs.read_train_ids(s, prefer="labelIds")
    assert kind == "labelIds" and train[1, 2] == 18 and train[3, 3] == 255 and train[0, 0] == 255


def test_cityscapes_non_utf8_file_name(tmp_path):
    root = _cs_tree(tmp_path / "cs", ["aachen_000000_000001"])
    bad = root / "leftImg8bit" / "val" / "aachen" / os.fsdecode(b"aachen_000000_00000\xe9_leftImg8bit.png")
    bad.write_bytes((root / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000001_leftImg8bit.png").read_bytes())
    with pytest.raises(ZooError, match="file name is not UTF-8") as exc:
        cs.find_files(root)
    assert "00000\\xe9_leftImg8bit.png" in one_line(exc)
    # an explicit order leaves it out: that run is fine
    assert [s.name for s in cs.find_files(root, order=["aachen_000000_000001"])] == ["aachen_000000_000001"]


def test_cityscapes_order_names_must_be_plain(tmp_path):
    root = _cs_tree(tmp_path / "cs", ["aachen_000000_000001"])
    with pytest.raises(ZooError, match="path separator"):
        cs.find_files(root, order=["../aachen_000000_000001"])


# ------------------------------------------------------------------ the Cityscapes source

def _open(root: Path, ids_file: Path | None = None, limit: int | None = None,
          labels: str = "labelTrainIds") -> cs.Cityscapes:
    opened = Opened(root=root, split="evaluation", ids_file=ids_file, builtin=False, limit=limit, expected=None,
                    name="val")
    return cs.Cityscapes.open(opened, {"name": "val"}, {"labels": labels}, root / "no-cache")


@needs_pil
def test_source_reads_pil_rgb_images_and_train_ids(tree: Path):
    src = _open(tree)
    assert src.family == "cityscapes" and src.ids == list(TREE) and len(src) == 5
    for i, (name, tid) in enumerate(TREE.items()):
        s = src.read(name)
        assert s.id == name and s.image.mode == "RGB" and s.image.size == (16, 8)   # PIL, decoded
        assert (np.asarray(s.image) == 10 * i).all()
        assert s.label.dtype == np.uint8 and s.label.shape == (8, 16) and (s.label == tid).all()
        assert s.info["label_kind"] == "labelTrainIds" and s.info["city"] == name.split("_")[0]
        assert s.info["image"].endswith(f"{name}_leftImg8bit.png") and s.info["size"] == (8, 16)
    with pytest.raises(ZooError, match="no sample 'lindau_000009_000019'"):
        src.read("lindau_000009_000019")


@needs_pil
def test_source_label_preference_is_a_setting(tree: Path):
    by_train, by_ids = _open(tree), _open(tree, labels="labelIds")
    name = "frankfurt_000000_000300"                          # has both kinds
    assert (by_train.read(name).label == 2).all()
    s = by_ids.read(name)
    assert s.info["label_kind"] == "labelIds" and np.array_equal(s.label, _expected_train(_label_ids(3)))
    assert (by_ids.read("frankfurt_000000_000100").label == 1).all()   # only labelTrainIds: that one
    derived = "labelIds (trainIds derived)"
    assert by_train.preparation()["labels"] == {"labelTrainIds": 5, derived: 0}
    assert by_ids.preparation()["labels"] == {"labelTrainIds": 3, derived: 2}
    assert by_ids.preparation()["labels_preferred"] == "labelIds"
    with pytest.raises(ZooError, match="data.source.labels must be one of labelIds, labelTrainIds, got 'trainIds'"):
        _open(tree, labels="trainIds")


@needs_pil
def test_read_label_does_not_decode_the_image(tree: Path):
    src = _open(tree)
    name = "lindau_000000_000019"
    img = tree / "leftImg8bit" / "val" / "lindau" / f"{name}_leftImg8bit.png"
    whole = img.read_bytes()
    img.write_bytes(whole[:40])                               # the header (with its size) only
    s = src.read_label(name)
    assert s.image is None and (s.label == 4).all() and s.info["size"] == (8, 16)
    with pytest.raises(ZooError, match="unreadable or truncated image") as exc:
        src.read(name)
    assert one_line(exc).startswith(str(img))
    # the label's size is still checked against the image's (from the header)
    img.write_bytes(whole)
    _label(tree, name, "labelTrainIds", np.full((8, 15), 4, np.uint8))
    for read in (src.read_label, src.read):
        with pytest.raises(ZooError, match=f"label is 15x8, its image {name}_leftImg8bit.png is 16x8"):
            read(name)


def test_limit_cuts_the_ids_before_their_files_are_checked(tree: Path):
    _image(tree, "lindau_000002_000019")                      # sorted last, no label
    with pytest.raises(ZooError, match="no label for this image"):
        _open(tree)
    src = _open(tree, limit=2)
    assert src.ids == list(TREE)[:2] and src.opened.limit == 2
    assert src.order == "sorted by city then name, first 2"
    ids = tree / "ids.txt"                                    # the guide's sort.log form is accepted
    ids.write_text("lindau/lindau_000001_000019_leftImg8bit.png\nfrankfurt_000000_000100\nmunster_000000_000019\n")
    with pytest.raises(ZooError, match="1 of 3 listed samples have no image"):
        _open(tree, ids)
    src = _open(tree, ids, limit=2)
    assert src.ids == ["lindau_000001_000019", "frankfurt_000000_000100"]
    assert src.order == f"as listed in {ids}, first 2"
    assert src.provenance()["preparation"]["order"] == src.order


@needs_pil
@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_cover_every_id_exactly_once(tree: Path, count: int):
    src = _open(tree)
    shards = [src.shard(i, count) for i in range(count)]
    assert [sid for sh in shards for sid in sh.ids] == src.ids     # each id once, in the source's order
    sizes = [len(sh) for sh in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(src)
    for i, sh in enumerate(shards):
        assert sh.provenance()["shard"] == {"index": i, "count": count}
        assert not sh.complete
        for sid in sh.ids:                                    # a shard reads its own samples
            assert (sh.read(sid).label == TREE[sid]).all()
    assert src.ids == list(TREE) and src.shard_of is None     # the source itself is unchanged


def test_image_sizes_from_the_headers(tree: Path):
    src = _open(tree)
    first = tree / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000100_leftImg8bit.png"
    assert src.image_sizes() == {(8, 16): first}
    other = _png(tree / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png",
                 np.zeros((6, 10, 3), np.uint8))
    assert _open(tree).image_sizes() == {(8, 16): first, (6, 10): other}
    assert _open(tree).preparation()["image_sizes"] == [[8, 16], [6, 10]]


def test_read_order_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a_1_2\nb_1_2_leftImg8bit.png\nval/a/a_1_2_leftImg8bit.png\n")
    with pytest.raises(ZooError, match=r"dup.txt: duplicate ids: lines 1 and 3 \('val/a/a_1_2_leftImg8bit.png' "
                                       r"and 'a_1_2' are both a_1_2\)"):
        cs.read_order(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ZooError, match="empty"):
        cs.read_order(tmp_path / "empty.txt")
    with pytest.raises(ZooError, match="ids file not found"):
        cs.read_order(tmp_path / "none.txt")
    (tmp_path / "path.txt").write_text("a_1_2\n../b/b_1_2\n")      # not a file name: a path is refused
    with pytest.raises(ZooError, match=r"path.txt: line 2: id '../b/b_1_2' contains a path separator"):
        cs.read_order(tmp_path / "path.txt")

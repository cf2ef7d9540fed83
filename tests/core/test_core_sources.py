"""zoo.datasets: open_source on the real built-in UNet++ sample (DSB2018), what a Source records
(provenance, complete/expected with ids files and limits), and how it is cut (shard, subset)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zoo.datasets import FAMILIES, open_source, source_class
from zoo.datasets.dsb2018 import DSB2018
from zoo.errors import ZooError
from zoo.fileutil import text_sha256
from zoo.ids import read_ids
from zoo.manifest import load_manifest
from zoo.paths import SAMPLES_DIR

M = load_manifest("unetpp")
BUILTIN = SAMPLES_DIR / "dsb2018"  # the family's built-in sample, the manifest's data.builtin
BUILTIN_IDS = BUILTIN / "builtin_ids.txt"
IDS = read_ids(BUILTIN_IDS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def builtin(cache):
    return open_source(M, None, None, None, cache)


@pytest.fixture
def declared(tmp_path):
    """The UNet++ manifest with its evaluation split declared as the 16 built-in ids (16 expected),
    so the built-in folder can stand for a full dataset given with --data."""
    (tmp_path / "eval_ids.txt").write_text("\n".join(IDS) + "\n")
    data = {**M.data, "splits": {"evaluation": {"ids_file": "eval_ids.txt", "expected_samples": len(IDS), "name": "val"}}}
    return dataclasses.replace(M, dir=tmp_path, data=data)


def test_builtin_sample_ids_and_provenance(builtin):
    assert isinstance(builtin, DSB2018) and builtin.family == "dsb2018"
    assert builtin.ids == IDS and len(builtin) == 16
    assert builtin.root == BUILTIN
    assert builtin.expected is None and builtin.complete is False   # a sample, not the 134-id split
    prov = builtin.provenance()
    prep = prov.pop("preparation")
    assert prov == {"name": "dsb2018", "path": str(BUILTIN), "split": "builtin (val)", "ids_file": str(BUILTIN_IDS),
                    "num_samples": 16, "expected_samples": None, "ids_sha256": text_sha256("\n".join(IDS)),
                    "limit": None, "builtin": True}
    assert prep["img_size"] == 96 and prep["prep_version"] >= 1 and Path(prep["path"]) == builtin.prepared
    assert "shard" not in prov


def test_builtin_preparation_is_cached(builtin, cache):
    again = open_source(M, None, None, None, cache)
    assert again.prepared == builtin.prepared
    assert again.preparation()["cached"] is True
    assert again.preparation()["cache_key"] == builtin.preparation()["cache_key"]


def test_read_and_read_label(builtin):
    s = builtin.read(IDS[0])
    assert s.id == IDS[0] and s.image.shape == (96, 96, 3) and s.label.shape == (96, 96)
    lab = builtin.read_label(IDS[0])
    assert lab.image is None and (lab.label == s.label).all()


def test_limit_on_the_builtin_sample(cache):
    src = open_source(M, None, None, 5, cache)
    assert src.ids == IDS[:5]
    prov = src.provenance()
    assert prov["limit"] == 5 and prov["num_samples"] == 5 and prov["expected_samples"] is None


def test_declared_split_is_complete(declared, cache):
    src = open_source(declared, BUILTIN, None, None, cache)
    assert src.ids == IDS and src.expected == 16 and src.complete is True
    prov = src.provenance()
    assert prov["split"] == "evaluation (val)" and prov["ids_file"] == str(declared.dir / "eval_ids.txt")
    assert prov["expected_samples"] == 16 and prov["builtin"] is False and prov["path"] == str(BUILTIN)
    # the declared file given by hand (another spelling of the same path) is still the split's own
    spelled = declared.dir / "." / "eval_ids.txt"
    assert open_source(declared, BUILTIN, spelled, None, cache).complete is True


def test_a_user_ids_file_or_a_limit_is_a_subset(declared, cache, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("\n".join(IDS) + "\n")                 # the same ids, but not the split's file
    src = open_source(declared, BUILTIN, mine, None, cache)
    assert src.ids == IDS and src.expected is None and src.complete is False
    assert src.provenance()["ids_file"] == str(mine)
    cut = open_source(declared, BUILTIN, None, 5, cache)
    assert cut.ids == IDS[:5] and cut.complete is False and cut.provenance()["limit"] == 5
    # a limit that cuts nothing leaves the whole split
    whole = open_source(declared, BUILTIN, None, 16, cache)
    assert whole.ids == IDS and whole.expected == 16 and whole.complete is True


def test_limit_is_applied_before_the_files_are_checked(declared, cache, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(IDS[:3] + ["deadbeef"]) + "\n")   # the 4th id has no files
    assert open_source(declared, BUILTIN, ids, 3, cache).ids == IDS[:3]
    with pytest.raises(ZooError, match="deadbeef.*image not found"):
        open_source(declared, BUILTIN, ids, None, cache)


def test_unknown_split_and_missing_folder(cache, tmp_path):
    with pytest.raises(ZooError) as exc:
        open_source(M, None, None, None, cache, split="guide_order")
    msg = str(exc.value)
    assert msg == "unetpp: no 'guide_order' split declared in its manifest (declared: calibration, evaluation)"
    with pytest.raises(ZooError, match=f"{tmp_path / 'nowhere'}: data folder not found"):
        open_source(M, tmp_path / "nowhere", None, None, cache)
    with pytest.raises(ZooError, match="not a DSB2018 folder"):
        open_source(M, tmp_path, None, None, cache)


def test_family_registry():
    assert source_class("dsb2018") is DSB2018
    for family in FAMILIES:
        assert source_class(family).family == family
    with pytest.raises(ZooError, match=r"unknown dataset family 'kitti' \(known: cityscapes, coco, dsb2018, voc\)"):
        source_class("kitti")


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 15, 16, 17, 40])
def test_shards_cover_every_id_once_in_order(builtin, count):
    shards = [builtin.shard(i, count) for i in range(count)]
    assert [sid for s in shards for sid in s.ids] == builtin.ids        # each id once, the source's order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # the first ones longer
    if count > len(builtin):
        assert sizes.count(0) == count - len(builtin)
    for i, s in enumerate(shards):
        assert s.shard_of == (i, count) and s.complete is False
        assert s.provenance()["shard"] == {"index": i, "count": count}
        assert s.provenance()["num_samples"] == len(s)
        if len(s):
            assert (s.read_label(s.ids[0]).label == builtin.read_label(s.ids[0]).label).all()
    assert builtin.shard_of is None and builtin.ids == IDS              # the source itself unchanged


def test_a_shard_of_a_complete_split_is_not_complete(declared, cache):
    src = open_source(declared, BUILTIN, None, None, cache)
    assert src.complete and not src.shard(0, 1).complete              # a shard is recorded as one
    assert src.shard(0, 1).ids == src.ids


@pytest.mark.parametrize("index,count", [(0, 0), (2, 2), (-1, 3)])
def test_bad_shard_numbers(builtin, index, count):
    with pytest.raises(ZooError, match=f"shard {index} of {count}"):
        builtin.shard(index, count)


def test_subset_keeps_the_given_order_and_refuses_unknown_ids(builtin):
    part = builtin.subset([IDS[3], IDS[0]])
    assert part.ids == [IDS[3], IDS[0]] and builtin.ids == IDS
    assert part.provenance()["num_samples"] == 2 and part.complete is False
    with pytest.raises(ZooError, match=r"dsb2018: ids not in this source: \['deadbeef'\]"):
        builtin.subset([IDS[0], "deadbeef"])
    with pytest.raises(ZooError, match="ids not in this source"):
        builtin.shard(0, 2).subset([IDS[-1]])                           # in the source, not in the shard


def test_an_ids_file_that_is_another_declared_splits_own_selects_that_split(declared, cache):
    """As Fast-SCNN's guide_order.txt: --ids-file naming a declared split's file opens that split,
    complete with its own expected size (the guide's reference is then compared); the split is
    recorded by name, and re-opening from the record (score) finds the same split."""
    (declared.dir / "calib_ids.txt").write_text("\n".join(IDS[3:7]) + "\n")
    data = {**declared.data, "splits": {**declared.data["splits"],
                                        "calibration": {"ids_file": "calib_ids.txt", "expected_samples": 4}}}
    m = dataclasses.replace(declared, data=data)
    src = open_source(m, BUILTIN, declared.dir / "calib_ids.txt", None, cache)
    assert src.ids == IDS[3:7] and src.expected == 4 and src.complete
    assert src.provenance()["split"] == "calibration" and src.provenance()["expected_samples"] == 4
    again = open_source(m, BUILTIN, Path(src.provenance()["ids_file"]), None, cache)
    assert again.ids == src.ids and again.opened.split == "calibration"
    # asked for by name, without --ids-file, it is the same split
    assert open_source(m, BUILTIN, None, None, cache, split="calibration").ids == IDS[3:7]

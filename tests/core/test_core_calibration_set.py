"""The calibration set of a reduced-precision run (zoo.quant.calibration_set): the calibration split,
never the evaluation one unless asked, a seeded subset in split order, described and keyed."""
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.paths import builtin_data_path
from zoo.quant.calibration_set import open_calibration, select

ROOT = Path(__file__).resolve().parents[2]
SHARED_DSB = ROOT.parent / "shared" / "datasets" / "dsb2018"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def unetpp():
    m = load_manifest("unetpp")
    return m, m.adapter()


def _open(m, a, cache, data=None, ids=None, size=32, method="minmax", seed=0, from_eval=False):
    return open_calibration(m, a, data, ids, size, method, seed, from_eval, cache)


def test_select_is_seeded_and_keeps_split_order():
    ids = [f"s{i:03d}" for i in range(100)]
    a, b, c = select(ids, 10, 0), select(ids, 10, 0), select(ids, 10, 1)
    assert a == b and a != c
    assert a == sorted(a, key=ids.index) and len(set(a)) == 10
    assert select(ids, 500, 0) == ids


def test_builtin_calibration_split_is_disjoint_from_evaluation(unetpp, cache):
    m, a = unetpp
    cal = _open(m, a, cache)
    evaluation = set(builtin_data_path(m.dir, m.data["builtin"]["ids_file"]).read_text().split())
    assert len(cal) == 6 and not set(cal.ids) & evaluation
    d = cal.describe()
    assert d["split"] == "builtin calibration (train)" and d["from_evaluation_split"] is False
    assert d["num_samples"] == 6 and d["requested_size"] == 32 and d["method"] == "minmax"
    x = next(cal.batches(4))
    assert x.shape == (4, 3, 96, 96) and x.dtype == np.float32
    assert list(next(cal.feeds(2))) == [m.input["name"]]


def test_key_follows_what_decides_the_calibration(unetpp, cache):
    m, a = unetpp
    base = _open(m, a, cache).key()
    assert _open(m, a, cache).key() == base
    assert _open(m, a, cache, method="entropy").key() != base
    assert _open(m, a, cache, size=3).key() != base
    assert _open(m, a, cache, size=3, seed=1).key() != _open(m, a, cache, size=3).key()
    assert _open(m, a, cache, from_eval=True).key() != base


def test_from_eval_is_marked(unetpp, cache):
    m, a = unetpp
    cal = _open(m, a, cache, from_eval=True)
    assert cal.describe()["from_evaluation_split"] is True and cal.describe()["split"] == "builtin (val)"
    with pytest.raises(ZooError, match="--calib-from-eval and --calib-ids exclude each other"):
        _open(m, a, cache, ids=m.dir / "calib_ids.txt", from_eval=True)


def test_no_calibration_split_says_how_to_give_one(cache):
    m = load_manifest("erfnet")  # the Cityscapes built-in sample: one val image, no train split
    with pytest.raises(ZooError) as exc:
        open_calibration(m, None, None, None, 32, "minmax", 0, False, cache)
    msg = str(exc.value)
    assert msg.startswith("erfnet: no calibration split (its built-in sample has none)") and "--calib-from-eval" in msg
    assert "\n" not in msg


def test_bad_method_size_and_missing_ids_file(unetpp, cache, tmp_path):
    m, a = unetpp
    with pytest.raises(ZooError, match="--calib-method must be one of minmax, entropy, percentile"):
        _open(m, a, cache, method="kl")
    with pytest.raises(ZooError, match="--calib-size must be >= 1"):
        _open(m, a, cache, size=0)
    with pytest.raises(ZooError, match=f"{tmp_path / 'none.txt'}: calibration ids file not found"):
        _open(m, a, cache, ids=tmp_path / "none.txt")


@pytest.mark.skipif(not (SHARED_DSB / "stage1_train").is_dir(), reason="needs ../shared/datasets/dsb2018 (the real calibration samples)")
def test_real_calibration_split_is_the_guides_train_ids(unetpp, cache):
    m, a = unetpp
    full = _open(m, a, cache, data=SHARED_DSB, size=96)
    assert len(full) == 96 and full.describe()["split"] == "calibration (train)"
    assert full.ids == (m.dir / "calib_ids.txt").read_text().split()
    assert not set(full.ids) & set((m.dir / "val_ids.txt").read_text().split())
    sub = _open(m, a, cache, data=SHARED_DSB)
    assert len(sub) == 32 and set(sub.ids) <= set(full.ids)

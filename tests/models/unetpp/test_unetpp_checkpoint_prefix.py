"""Checkpoints verified by a sha256 PREFIX (OpenMMLab's file-name convention) through the real CLI.

The path used to die at the very end: the prefix was recorded as `expected_sha256`, which the
result schema requires to be 64 hex digits, so no result was ever written."""
from __future__ import annotations

import shutil
from pathlib import Path

from zoo import schema
from zoo.fileutil import file_digest

from tests.zootest import assert_clean_failure, last_json

from .conftest import MODEL_DIR

BUILTIN_CKPT = MODEL_DIR / "weights" / "unetpp_dsb2018.pth"
FAST = ("--batch-sizes", "1", "--limit", "4", "--no-peak", "--iters", "2", "--warmup", "0",
        "--time-budget", "1")


def _named_copy(tmp_path: Path) -> tuple[Path, str]:
    """The built-in checkpoint under an OpenMMLab-style name carrying its own sha256 prefix."""
    sha = file_digest(BUILTIN_CKPT)
    dst = tmp_path / f"unetpp_dsb2018_20261122-{sha[:8]}.pth"
    shutil.copyfile(BUILTIN_CKPT, dst)
    return dst, sha


def test_sha256_prefix_in_upper_case_gives_a_valid_result(run_zoo, tmp_path):
    ckpt, sha = _named_copy(tmp_path)
    out = tmp_path / "results"
    proc = run_zoo("run", "--model", "unetpp", "--weights", ckpt, "--sha256", sha[:8].upper(), *FAST, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    w = rec["provenance"]["weights"]
    assert w["sha256"] == sha and w["md5"] == file_digest(ckpt, "md5")
    assert w["checks"] == [{"kind": "sha256-prefix", "value": sha[:8], "source": "cli"}]
    assert w["verified"] is True and w["builtin"] is False
    assert w["expected_sha256"] is None            # no full sha256 was given: none is claimed


def test_file_name_prefix_alone_is_checked(run_zoo, tmp_path):
    """No checksum given: the `-<8 hex>.pth` suffix is the expected prefix (source file-name)."""
    ckpt, sha = _named_copy(tmp_path)
    out = tmp_path / "results"
    proc = run_zoo("run", "--model", "unetpp", "--weights", ckpt, *FAST, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    w = rec["provenance"]["weights"]
    assert w["checks"] == [{"kind": "sha256-prefix", "value": sha[:8], "source": "file-name"}]
    assert w["verified"] is True
    # the same bytes under a name whose suffix is some other prefix: refused, nothing written
    wrong = tmp_path / f"unetpp_dsb2018-{'0' if sha[0] != '0' else '1'}{sha[1:8]}.pth"
    shutil.copyfile(ckpt, wrong)
    out2 = tmp_path / "results2"
    out2.mkdir()
    proc = run_zoo("run", "--model", "unetpp", "--weights", wrong, *FAST, "--out", out2)
    assert_clean_failure(proc, out2, wrong.name, "sha256 prefix mismatch", "file name")
    assert "[2/7]" not in proc.stderr


def test_bad_checksum_options_are_refused_before_any_work(run_zoo, tmp_path):
    ckpt, _ = _named_copy(tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    # every kind of bad value is covered in tests/core/test_core_checkpoints.py; here: through the CLI
    for opt, value, needle in (("--sha256", "0", "at least 8"), ("--md5", "ABC123", "32 hex digits")):
        proc = run_zoo("run", "--model", "unetpp", "--weights", ckpt, opt, value, *FAST, "--out", out)
        assert_clean_failure(proc, out, opt, value, needle)
        assert "[2/7]" not in proc.stderr, (opt, value)

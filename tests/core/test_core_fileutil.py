"""zoo.fileutil: digests and atomic writes."""
import hashlib
import os

import pytest

from zoo.fileutil import atomic_write_bytes, atomic_write_text, file_digest, text_sha256


def test_atomic_write_text_creates_parents_and_writes(tmp_path):
    p = tmp_path / "a" / "b" / "r.json"
    atomic_write_text(p, "héllo\n")
    assert p.read_bytes() == "héllo\n".encode()
    assert os.listdir(p.parent) == ["r.json"]


def test_atomic_write_text_replaces(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old content that is longer than the new one")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    p.write_text("old")

    def boom(src, dst):
        raise OSError("disk on fire")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_write_failure_new_file_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "r.json"

    def boom(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "new")
    assert os.listdir(tmp_path) == []


def test_atomic_write_bytes_exact(tmp_path):
    data = bytes(range(256)) * 3
    p = tmp_path / "b.bin"
    atomic_write_bytes(p, data)
    assert p.read_bytes() == data


def test_atomic_write_respects_umask(tmp_path):
    plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    old = os.umask(0o022)
    try:
        plain.write_text("x")
        atomic_write_text(atomic, "x")
    finally:
        os.umask(old)
    assert (plain.stat().st_mode & 0o777) == 0o644
    assert (atomic.stat().st_mode & 0o777) == 0o644


def test_digests(tmp_path):
    data = b"abc" * 1000
    p = tmp_path / "d.bin"
    p.write_bytes(data)
    assert file_digest(p) == hashlib.sha256(data).hexdigest()
    assert file_digest(p, "md5") == hashlib.md5(data).hexdigest()
    assert file_digest(p, chunk=7) == hashlib.sha256(data).hexdigest()     # chunking is seamless
    assert text_sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

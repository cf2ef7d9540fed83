"""zoo.checkpoints: checksums, resolve (local, manifest checkpoint, http with cache), state_dict
unwrapping and strict loading. Downloads come from a loopback http.server."""
import copy
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo import schema
from zoo.errors import ZooError
from zoo.manifest import Manifest, load_manifest
from zoo.schema import SchemaError
from zoo.checkpoints import (Check, download, load_strict, name_prefix, plan, read_checkpoint, resolve,
                         unwrap_state_dict, verify_checksums)

PAYLOAD = b"pretend these are weights\x00\x01\x02" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "result_example.json"


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _manifest(tmp_path, weights=None) -> Manifest:
    import dataclasses  # a real manifest with other weights and folder
    return dataclasses.replace(load_manifest("unetpp"), name="tiny", dir=tmp_path, weights=weights or {"checkpoints": {}})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------- checksums

def test_verify_checksums_ok(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(PAYLOAD)
    assert verify_checksums(f) == (PAYLOAD_SHA, PAYLOAD_MD5)
    assert verify_checksums(f, PAYLOAD_SHA, PAYLOAD_MD5) == (PAYLOAD_SHA, PAYLOAD_MD5)
    assert verify_checksums(f, PAYLOAD_SHA.upper(), PAYLOAD_MD5.upper()) == (PAYLOAD_SHA, PAYLOAD_MD5)


def test_verify_checksums_sha256_mismatch(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(ZooError) as ei:
        verify_checksums(f, sha256=wrong)
    msg = _one_line(ei)
    assert str(f) in msg and "sha256" in msg and wrong in msg and PAYLOAD_SHA in msg


def test_verify_checksums_md5_mismatch(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(PAYLOAD)
    wrong = "f" * 32
    with pytest.raises(ZooError) as ei:
        verify_checksums(f, sha256=PAYLOAD_SHA, md5=wrong)
    msg = _one_line(ei)
    assert str(f) in msg and "md5" in msg and wrong in msg and PAYLOAD_MD5 in msg


@pytest.mark.parametrize("option,value,needle", [
    ("--sha256", PAYLOAD_SHA[:1], "at least 8 hex digits"),      # 1 digit matched 1 file in 16
    ("--sha256", PAYLOAD_SHA[:7], "at least 8 hex digits"),
    ("--sha256", "", "not hexadecimal"),
    ("--sha256", "g" + PAYLOAD_SHA[1:], "not hexadecimal"),
    ("--sha256", PAYLOAD_SHA[:8] + " x", "not hexadecimal"),
    ("--sha256", PAYLOAD_SHA + "0", "longer than a sha256"),
    ("--md5", PAYLOAD_MD5[:31], "32 hex digits"),
    ("--md5", PAYLOAD_MD5 + "a", "32 hex digits"),
    ("--md5", PAYLOAD_SHA, "32 hex digits"),
    ("--md5", "z" * 32, "not hexadecimal"),
])
def test_bad_expected_checksums_are_refused_before_reading(tmp_path, option, value, needle):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    kw = {option[2:]: value}
    for spec in (str(f), str(tmp_path / "absent.pth"), "http://127.0.0.1:9/w.pth"):  # nothing read or fetched
        with pytest.raises(ZooError) as ei:
            resolve(spec, _manifest(tmp_path), **kw)
        msg = _one_line(ei)
        assert msg.startswith(f"{option}: {value!r}") and needle in msg, msg


def test_upper_case_checksums_are_stored_lower_case(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    w = resolve(str(f), _manifest(tmp_path), sha256=PAYLOAD_SHA.upper(), md5=PAYLOAD_MD5.upper())
    assert w.checks == [Check("sha256", PAYLOAD_SHA, "cli"), Check("md5", PAYLOAD_MD5, "cli")]
    assert w.expected_sha256 == PAYLOAD_SHA and w.verified
    _assert_schema_valid(w.record())


def test_sha256_prefix_is_recorded_as_a_prefix(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    w = resolve(str(f), _manifest(tmp_path), sha256=PAYLOAD_SHA[:8].upper())
    rec = w.record()
    assert rec["checks"] == [{"kind": "sha256-prefix", "value": PAYLOAD_SHA[:8], "source": "cli"}]
    assert rec["verified"] is True and rec["expected_sha256"] is None and rec["sha256"] == PAYLOAD_SHA
    _assert_schema_valid(rec)
    wrong = ("1" if PAYLOAD_SHA[0] == "0" else "0") + PAYLOAD_SHA[1:8]
    with pytest.raises(ZooError) as ei:
        resolve(str(f), _manifest(tmp_path), sha256=wrong)
    assert "sha256 prefix mismatch" in _one_line(ei) and wrong in str(ei.value)


def _assert_schema_valid(weights_record: dict) -> None:
    rec = json.loads(FIXTURE.read_text())
    rec["provenance"]["weights"] = json.loads(json.dumps(weights_record))
    schema.validate(rec, "weights-record")


def test_schema_reads_old_and_new_weights_records():
    new = json.loads(FIXTURE.read_text())
    schema.validate(new)
    assert new["provenance"]["weights"]["checks"][0]["kind"] == "sha256"
    old = copy.deepcopy(new)                                    # a 1.0-1.4 record: no checks
    old["schema_version"] = "1.4"
    del old["provenance"]["weights"]["checks"]
    schema.validate(old)
    unverified = copy.deepcopy(new)
    unverified["provenance"]["weights"].update(checks=[], verified=False, expected_sha256=None)
    schema.validate(unverified)
    broken = [
        lambda w: w.update(verified=False),                                  # checks listed, not verified
        lambda w: w.update(checks=[], verified=True),                        # verified by nothing
        lambda w: w.update(expected_sha256=PAYLOAD_SHA[:8]),                 # the 1.4 defect
        lambda w: w["checks"].append({"kind": "sha256-prefix", "value": "0", "source": "cli"}),
        lambda w: w["checks"].append({"kind": "sha256-prefix", "value": "ABCDEF12", "source": "cli"}),
        lambda w: w["checks"].append({"kind": "md5", "value": PAYLOAD_SHA, "source": "cli"}),
        lambda w: w["checks"].append({"kind": "sha256", "value": PAYLOAD_SHA[:8], "source": "cli"}),
        lambda w: w["checks"].append({"kind": "crc32", "value": "abcdef12", "source": "cli"}),
        lambda w: w["checks"].append({"kind": "md5", "value": PAYLOAD_MD5, "source": "a friend"}),
    ]
    for damage in broken:
        rec = copy.deepcopy(new)
        damage(rec["provenance"]["weights"])
        with pytest.raises(SchemaError, match="provenance/weights"):
            schema.validate(rec, "x.json")


# ---------------------------------------------------------------------------- file names

def test_name_prefix():
    assert name_prefix("fcn_r50-d8_512x512_20k_voc12aug_20200617_010715-52dc5306.pth") == "52dc5306"
    assert name_prefix("/a/b/resnet50-0676ba61.pth") == "0676ba61"
    assert name_prefix("model-20240101.pth") is None           # a date, not a checksum
    assert name_prefix("model-52dc530.pth") is None            # 7 digits
    assert name_prefix("model-52dc53066.pth") is None          # 9 digits
    assert name_prefix("model-52DC5306.pth") is None           # OpenMMLab names are lower case
    assert name_prefix("model_52dc5306.pth") is None
    assert name_prefix("model-52dc5306.pth.bak") is None


def test_file_name_prefix_is_checked_when_nothing_else_is_given(tmp_path):
    good = tmp_path / f"net_20200617-{PAYLOAD_SHA[:8]}.pth"
    good.write_bytes(PAYLOAD)
    w = resolve(str(good), _manifest(tmp_path))
    assert w.checks == [Check("sha256-prefix", PAYLOAD_SHA[:8], "file-name")] and w.verified
    _assert_schema_valid(w.record())
    wrong_prefix = ("1" if PAYLOAD_SHA[0] == "0" else "0") + PAYLOAD_SHA[1:8]
    bad = tmp_path / f"net-{wrong_prefix}.pth"
    bad.write_bytes(PAYLOAD)
    with pytest.raises(ZooError) as ei:
        resolve(str(bad), _manifest(tmp_path))
    msg = _one_line(ei)
    assert str(bad) in msg and "sha256 prefix mismatch" in msg and "file name" in msg and "--sha256" in msg
    # a checksum given on the command line replaces the name's
    w = resolve(str(bad), _manifest(tmp_path), md5=PAYLOAD_MD5)
    assert w.checks == [Check("md5", PAYLOAD_MD5, "cli")]
    # a date-like suffix is not a checksum: read, not verified
    dated = tmp_path / "net-20240101.pth"
    dated.write_bytes(PAYLOAD)
    w = resolve(str(dated), _manifest(tmp_path))
    assert w.checks == [] and not w.verified
    _assert_schema_valid(w.record())


def test_official_file_names_map_to_the_published_checksums(tmp_path):
    """A local file named like fcn8s's / nasfpn's official checkpoint (the real manifests) is
    checked against what the manifest publishes for it: FCN md5 + sha256 prefix, NAS-FPN prefix."""
    fcn = load_manifest("fcn8s")
    official = fcn.weights["checkpoints"]["official"]
    fname = official["url"].rsplit("/", 1)[-1]
    p = plan(str(tmp_path / fname), fcn)
    assert p.url is None and p.path == tmp_path / fname and not p.builtin
    assert p.checks == [Check("sha256-prefix", official["sha256_prefix"], "manifest"),
                        Check("md5", official["md5"], "manifest")]
    assert official["sha256_prefix"] == "52dc5306" and len(official["md5"]) == 32
    nas = load_manifest("nasfpn")
    nname = nas.weights["checkpoints"]["official"]["url"].rsplit("/", 1)[-1]
    assert plan(str(tmp_path / nname), nas).checks == [Check("sha256-prefix", "0ad1f644", "manifest")]
    # the default (no --weights) is the official URL with the same checks
    p = plan(None, fcn)
    assert p.url == official["url"] and [c.source for c in p.checks] == ["manifest", "manifest"]
    # --sha256 on the command line replaces the published sha256 prefix, the md5 still applies
    p = plan(None, fcn, sha256=PAYLOAD_SHA)
    assert p.checks == [Check("sha256", PAYLOAD_SHA, "cli"), Check("md5", official["md5"], "manifest")]
    # a file of that name with other bytes: refused, naming the published checksum
    fake = tmp_path / fname
    fake.write_bytes(PAYLOAD)
    with pytest.raises(ZooError) as ei:
        resolve(str(fake), fcn)
    msg = _one_line(ei)
    assert str(fake) in msg and "52dc5306" in msg and "published" in msg


# ---------------------------------------------------------------------------- resolve: local

def test_resolve_local_path(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    w = resolve(str(f), _manifest(tmp_path))
    assert w.path == f.resolve() and w.sha256 == PAYLOAD_SHA and w.md5 == PAYLOAD_MD5
    assert not w.verified and w.url is None and not w.builtin
    w = resolve(str(f), _manifest(tmp_path), sha256=PAYLOAD_SHA)
    assert w.verified and w.expected_sha256 == PAYLOAD_SHA
    rec = w.record()
    assert rec["path"] == str(f.resolve()) and rec["verified"] is True and "expected_md5" not in rec


def test_resolve_local_wrong_checksum(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    with pytest.raises(ZooError) as ei:
        resolve(str(f), _manifest(tmp_path), md5="0" * 32)
    assert str(f) in _one_line(ei)


def test_resolve_local_missing_file(tmp_path):
    missing = tmp_path / "nope" / "w.pth"
    with pytest.raises(ZooError) as ei:
        resolve(str(missing), _manifest(tmp_path))
    msg = _one_line(ei)
    assert str(missing) in msg and "not found" in msg


def test_resolve_manifest_checkpoint(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pth").write_bytes(PAYLOAD)
    m = _manifest(tmp_path, {"default": "builtin",
                             "checkpoints": {"builtin": {"path": "weights/w.pth", "sha256": PAYLOAD_SHA}}})
    for spec in (None, "builtin"):
        w = resolve(spec, m)
        assert w.builtin and w.verified and w.path == (tmp_path / "weights" / "w.pth").resolve()
    bad = _manifest(tmp_path, {"default": "builtin",
                               "checkpoints": {"builtin": {"path": "weights/w.pth", "sha256": "1" * 64}}})
    with pytest.raises(ZooError, match="sha256 mismatch"):
        resolve(None, bad)


def test_resolve_without_spec_or_default(tmp_path):
    with pytest.raises(ZooError, match="tiny: no --weights"):
        resolve(None, _manifest(tmp_path))


# ---------------------------------------------------------------------------- resolve: http

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        if self.server.barrier is not None:      # hold every request until all have arrived
            self.server.barrier.wait(timeout=20)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if self.server.barrier is not None:      # both clients are now mid-body
            time.sleep(0.3)
        self.wfile.write(body[half:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A loopback HTTP server with /w/tiny.pth; ZOO_CACHE points into tmp_path."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/w/tiny.pth": PAYLOAD}
    srv.requests = []
    srv.barrier = None
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def test_resolve_url_downloads_then_uses_cache(server, tmp_path):
    url = server.base + "/w/tiny.pth"
    m = _manifest(tmp_path)
    w = resolve(url, m, sha256=PAYLOAD_SHA)
    cache = tmp_path / "cache"
    assert w.path == (cache / "downloads" / PAYLOAD_SHA[:16] / "tiny.pth").resolve()
    assert w.path.read_bytes() == PAYLOAD
    assert w.url == url and w.verified and w.sha256 == PAYLOAD_SHA
    assert server.requests == ["/w/tiny.pth"]
    assert _files(cache) == [w.path]                     # no .part left behind
    w2 = resolve(url, m, sha256=PAYLOAD_SHA)
    assert w2.path == w.path and w2.url == url
    assert len(server.requests) == 1                     # served from the cache


def test_resolve_url_damaged_cache_is_downloaded_again(server, tmp_path):
    url = server.base + "/w/tiny.pth"
    w = resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
    w.path.write_bytes(b"damaged")
    w2 = resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
    assert w2.path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_resolve_url_md5_only(server, tmp_path):
    w = resolve(server.base + "/w/tiny.pth", _manifest(tmp_path), md5=PAYLOAD_MD5)
    assert w.md5 == PAYLOAD_MD5 and w.verified
    assert w.path.parent.name == PAYLOAD_MD5[:16]


def test_resolve_url_wrong_checksum_leaves_nothing(server, tmp_path):
    url = server.base + "/w/tiny.pth"
    wrong = "a" * 64
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path), sha256=wrong)
    msg = _one_line(ei)
    assert url in msg and "rejected" in msg and wrong in msg and PAYLOAD_SHA in msg
    assert server.requests == ["/w/tiny.pth"]
    assert _files(tmp_path / "cache") == []


def test_resolve_url_without_checksum_is_refused(server, tmp_path):
    url = server.base + "/w/tiny.pth"
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path))
    msg = _one_line(ei)
    assert url in msg and "refusing" in msg
    assert server.requests == []
    assert _files(tmp_path / "cache") == []


def test_resolve_url_404(server, tmp_path):
    url = server.base + "/w/missing.pth"
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
    msg = _one_line(ei)
    assert url in msg and "404" in msg and "download failed" in msg
    assert server.requests == ["/w/missing.pth"]
    assert _files(tmp_path / "cache") == []


def test_resolve_manifest_url_checkpoint(server, tmp_path):
    m = _manifest(tmp_path, {"default": "remote", "checkpoints": {
        "remote": {"url": server.base + "/w/tiny.pth", "sha256": PAYLOAD_SHA}}})
    w = resolve(None, m)
    assert w.url == server.base + "/w/tiny.pth" and w.verified and not w.builtin
    assert w.path.read_bytes() == PAYLOAD


def _raw_server(response: bytes):
    """A one-connection loopback server answering any request with `response` bytes, then closing."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(10)

    def run():
        try:
            conn, _ = s.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(response)
        except OSError:
            pass
        finally:
            s.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return f"http://127.0.0.1:{s.getsockname()[1]}/w/tiny.pth", t


def test_resolve_url_truncated_content_length_is_rejected(server, tmp_path):
    # the connection closes after 10 of 100 announced bytes: a failed download, not a checksum question
    url, t = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
    msg = _one_line(ei)
    assert msg.startswith(url) and "download failed" in msg and "rejected" not in msg
    t.join(5)
    assert _files(tmp_path / "cache") == []


def test_resolve_url_truncated_chunked_body(server, tmp_path):
    url, t = _raw_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789")
    try:
        with pytest.raises(ZooError) as ei:
            resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
        assert url in _one_line(ei)
    finally:
        t.join(5)
    assert _files(tmp_path / "cache") == []


def test_resolve_url_bad_status_line(server, tmp_path):
    url, t = _raw_server(b"HELLO WORLD\r\n\r\n")
    try:
        with pytest.raises(ZooError) as ei:
            resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
        assert url in _one_line(ei) and "download failed" in str(ei.value)
    finally:
        t.join(5)


def test_cache_entry_is_named_by_the_url_path_only(server, tmp_path):
    server.files["/w/tiny.pth?token=abc%2F.."] = PAYLOAD
    w = resolve(server.base + "/w/tiny.pth?token=abc%2F..", _manifest(tmp_path), sha256=PAYLOAD_SHA)
    assert w.path.name == "tiny.pth" and w.path.parent.parent == (tmp_path / "cache" / "downloads").resolve()
    server.files["/w/..%2Fa%20b.pth"] = PAYLOAD
    w = resolve(server.base + "/w/..%2Fa%20b.pth", _manifest(tmp_path), md5=PAYLOAD_MD5)
    assert w.path.name == ".._a_b.pth" and w.path.parent.parent == (tmp_path / "cache" / "downloads").resolve()


def test_download_larger_than_the_limit_is_refused_up_front(server, tmp_path):
    url = server.base + "/w/tiny.pth"
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA, max_bytes=len(PAYLOAD) - 1)
    msg = _one_line(ei)
    assert msg.startswith(url) and f"refusing to download {len(PAYLOAD)} bytes" in msg and "limit" in msg
    assert _files(tmp_path / "cache") == []
    # exactly at the limit is fine
    w = resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA, max_bytes=len(PAYLOAD))
    assert w.path.read_bytes() == PAYLOAD


def test_download_stream_over_the_limit_is_aborted(tmp_path):
    # no Content-Length: the body is counted as it streams
    url, t = _raw_server(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + b"x" * 5000)
    dest = tmp_path / "dl" / "big.pth"
    try:
        with pytest.raises(ZooError) as ei:
            download(url, dest, PAYLOAD_SHA, None, max_bytes=1000)
        msg = _one_line(ei)
        assert msg.startswith(url) and "aborted" in msg and "1000-byte limit" in msg
    finally:
        t.join(5)
    assert _files(tmp_path / "dl") == []


def test_download_checksum_mismatch_keeps_the_existing_file(server, tmp_path):
    dest = tmp_path / "dl" / "tiny.pth"
    dest.parent.mkdir()
    dest.write_bytes(b"an older file")
    with pytest.raises(ZooError) as ei:
        download(server.base + "/w/tiny.pth", dest, None, "0" * 32)
    assert "md5 mismatch" in _one_line(ei) and "rejected" in str(ei.value)
    assert _files(tmp_path / "dl") == [dest] and dest.read_bytes() == b"an older file"
    assert download(server.base + "/w/tiny.pth", dest, PAYLOAD_SHA[:8].upper(), None) == dest
    assert _files(tmp_path / "dl") == [dest] and dest.read_bytes() == PAYLOAD
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask     # as a plain open() would, not mkstemp's 0600


def test_two_concurrent_downloads_of_the_same_url_both_succeed(server, tmp_path):
    """Both requests are held until both arrived, then both bodies stream at the same time
    into the same cache entry (a fixed `<dest>.part` name made one of them fail)."""
    server.barrier = threading.Barrier(2)
    url, m = server.base + "/w/tiny.pth", _manifest(tmp_path)
    results, errors = [], []

    def one():
        try:
            results.append(resolve(url, m, sha256=PAYLOAD_SHA))
        except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 2
    assert server.requests == ["/w/tiny.pth"] * 2
    assert results[0].path == results[1].path and results[0].path.read_bytes() == PAYLOAD
    assert _files(tmp_path / "cache") == [results[0].path]     # no temporary file left


_CHILD = """
import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)   # a background job may inherit SIGINT ignored
from zoo.checkpoints import download
try:
    download(sys.argv[1], Path(sys.argv[2]), sys.argv[3], None)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def test_interrupted_download_leaves_nothing(tmp_path):
    """A real SIGINT to a process in the middle of a download (1 MB announced, 1 KB sent, then
    the server stalls): the temporary file is removed, no file is published."""
    sent, release = threading.Event(), threading.Event()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(30)

    def serve():
        try:
            conn, _ = s.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
                sent.set()
                release.wait(30)
        except OSError:
            pass
        finally:
            s.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    folder = tmp_path / "dl"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(no_proxy="127.0.0.1", NO_PROXY="127.0.0.1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, f"http://127.0.0.1:{s.getsockname()[1]}/w/big.pth",
                             str(folder / "big.pth"), PAYLOAD_SHA], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sent.wait(30), "the child never asked for the file"
        deadline = time.time() + 30
        while not list(folder.glob("*.part")) and time.time() < deadline:
            time.sleep(0.02)
        assert list(folder.glob("*.part")), "the download never started writing"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t.join(5)
    assert proc.returncode == 130, err[-2000:]
    assert _files(folder) == []


# ---------------------------------------------------------------------------- state dicts

def test_unwrap_state_dict_container_and_prefix():
    inner = {"module.conv.weight": 1, "module.conv.bias": 2, "head.weight": 3}
    out = unwrap_state_dict({"state_dict": inner, "epoch": 7, "optimizer": {}}, ("module.",))
    assert out == {"conv.weight": 1, "conv.bias": 2, "head.weight": 3}
    assert list(out) == ["conv.weight", "conv.bias", "head.weight"]   # order kept


def test_unwrap_state_dict_raw_and_first_matching_prefix_only():
    raw = {"module.model.a": 1, "b": 2}
    assert unwrap_state_dict(raw) == raw
    # only one prefix is stripped per key, the first that matches
    assert unwrap_state_dict(raw, ("module.", "model.")) == {"model.a": 1, "b": 2}
    # 'state_dict' that is not a dict is an ordinary entry
    odd = {"state_dict": 5, "w": 1}
    assert unwrap_state_dict(odd) == odd


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    # keys: 0.weight 0.bias 1.weight 1.bias 1.running_mean 1.running_var 1.num_batches_tracked


def _sd():
    torch.manual_seed(1)
    return {k: (torch.randn_like(v) if v.is_floating_point() else v + 5) for k, v in _net().state_dict().items()}


def test_load_strict_ok_loads_values():
    net, sd = _net(), _sd()
    load_strict(net, sd, "ckpt.pth")
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_load_strict_unexpected_key():
    sd = _sd()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ZooError) as ei:
        load_strict(_net(), sd, "ckpt.pth")
    msg = _one_line(ei)
    assert msg.startswith("ckpt.pth: ") and "1 unexpected: extra.weight" in msg
    assert "missing" not in msg and "wrong shape" not in msg


def test_load_strict_missing_key():
    sd = _sd()
    del sd["0.bias"]
    with pytest.raises(ZooError) as ei:
        load_strict(_net(), sd, Path("ckpt.pth"))
    msg = _one_line(ei)
    assert "1 missing: 0.bias" in msg and "unexpected" not in msg


def test_load_strict_wrong_shape():
    net = _net()
    before = net.state_dict()["0.weight"].clone()
    sd = _sd()
    sd["0.weight"] = torch.zeros(4, 2)
    with pytest.raises(ZooError) as ei:
        load_strict(net, sd, "ckpt.pth")
    assert "1 wrong shape: 0.weight [4, 2] != [3, 2]" in _one_line(ei)
    assert torch.equal(net.state_dict()["0.weight"], before)     # nothing loaded on failure


def test_load_strict_lists_all_kinds_and_truncates():
    with pytest.raises(ZooError) as ei:
        load_strict(_net(), {"a": torch.zeros(1), "0.weight": torch.zeros(1)}, "x.pth", show=5)
    msg = _one_line(ei)
    # 6 missing (all but 0.weight) shown 5 + "(+1 more)"; 1 unexpected; 1 wrong shape
    assert "6 missing: 0.bias, 1.weight, 1.bias, 1.running_mean, 1.running_var (+1 more)" in msg
    assert "1 unexpected: a" in msg and "1 wrong shape: 0.weight [1] != [3, 2]" in msg


def test_load_strict_optional_missing_num_batches_tracked():
    sd = _sd()
    del sd["1.num_batches_tracked"]
    with pytest.raises(ZooError, match="1 missing: 1.num_batches_tracked"):
        load_strict(_net(), dict(sd), "old.pth")
    net = _net()
    load_strict(net, sd, "old.pth", optional_missing=(r"num_batches_tracked$",))
    assert torch.equal(net.state_dict()["1.running_var"], sd["1.running_var"])
    # the pattern does not excuse other keys
    del sd["1.running_mean"]
    with pytest.raises(ZooError) as ei:
        load_strict(_net(), sd, "old.pth", optional_missing=(r"num_batches_tracked$",))
    assert "1 missing: 1.running_mean" in str(ei.value)


# ---------------------------------------------------------------------------- read_checkpoint

def test_read_checkpoint_roundtrip(tmp_path):
    f = tmp_path / "ok.pth"
    torch.save({"state_dict": _net().state_dict()}, f)
    obj = read_checkpoint(f)
    assert set(obj) == {"state_dict"} and "1.running_var" in obj["state_dict"]


def test_read_checkpoint_garbage(tmp_path):
    f = tmp_path / "garbage.pth"
    f.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ZooError) as ei:
        read_checkpoint(f)
    msg = _one_line(ei)
    assert str(f) in msg and "not a readable PyTorch checkpoint" in msg


def test_read_checkpoint_not_a_dict(tmp_path):
    f = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], f)
    with pytest.raises(ZooError) as ei:
        read_checkpoint(f)
    assert str(f) in str(ei.value) and "list" in str(ei.value)


def test_read_checkpoint_refuses_pickled_objects(tmp_path):
    # weights_only=True: an arbitrary pickled object is not loaded
    f = tmp_path / "module.pth"
    torch.save(nn.Linear(1, 1), f)
    with pytest.raises(ZooError) as ei:
        read_checkpoint(f)
    assert str(f) in _one_line(ei)

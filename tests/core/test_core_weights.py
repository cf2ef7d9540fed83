"""zoo.weights: checksums, resolve (local, manifest checkpoint, http with cache), state_dict
unwrapping and strict loading. Downloads come from a loopback http.server."""
import hashlib
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.manifest import Manifest
from zoo.weights import (load_strict, read_checkpoint, resolve, unwrap_state_dict, verify_checksums)

PAYLOAD = b"pretend these are weights\x00\x01\x02" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _manifest(tmp_path, weights=None) -> Manifest:
    return Manifest(name="tiny", dir=tmp_path, raw={"weights": weights or {"checkpoints": {}}})


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
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
    # the connection closes after 10 of 100 announced bytes: caught by the checksum
    url, t = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    with pytest.raises(ZooError) as ei:
        resolve(url, _manifest(tmp_path), sha256=PAYLOAD_SHA)
    assert url in _one_line(ei)
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

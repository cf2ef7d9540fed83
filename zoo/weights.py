"""Checkpoints: resolve (built-in, local path or URL), download with a cache, verify checksums,
and load strictly with upstream key names.

A checkpoint spec is one of
  - None / a checkpoint name from the manifest (`weights.checkpoints.<name>`): its path or URL
    and its expected checksums come from the manifest;
  - a local file path, optionally with an expected sha256/md5 from the command line;
  - an http(s) URL, with an expected sha256 or md5 (required: an unverified download is refused).
"""
from __future__ import annotations

import http.client
import re
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest
from zoo.paths import cache_dir


@dataclass
class Weights:
    path: Path
    sha256: str
    md5: str
    url: str | None = None
    expected_sha256: str | None = None
    expected_md5: str | None = None
    builtin: bool = False

    @property
    def verified(self) -> bool:
        return bool(self.expected_sha256 or self.expected_md5)

    def record(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["verified"] = self.verified
        d.pop("expected_md5")
        return d


def verify_checksums(path: Path, sha256: str | None = None, md5: str | None = None) -> tuple[str, str]:
    """Return (sha256, md5) of path; raise ZooError on a mismatch with an expected value."""
    got_sha, got_md5 = file_digest(path, "sha256"), file_digest(path, "md5")
    if sha256 and len(sha256) < 64 and not got_sha.startswith(sha256.lower()):
        # OpenMMLab publishes the first 8 hex digits of the sha256 in the file name (and checks them)
        raise ZooError(f"{path}: sha256 prefix mismatch: expected {sha256.lower()}..., got {got_sha}")
    if sha256 and len(sha256) == 64 and got_sha != sha256.lower():
        raise ZooError(f"{path}: sha256 mismatch: expected {sha256.lower()}, got {got_sha}")
    if md5 and got_md5 != md5.lower():
        raise ZooError(f"{path}: md5 mismatch: expected {md5.lower()}, got {got_md5}")
    return got_sha, got_md5


def download(url: str, dest: Path, sha256: str | None, md5: str | None, timeout: float = 60) -> Path:
    """Download url to dest (atomic rename after verifying), showing progress on stderr."""
    if not (sha256 or md5):
        raise ZooError(f"{url}: refusing to download weights without an expected sha256 or md5")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while block := resp.read(1 << 20):
                out.write(block)
                done += len(block)
                if total:
                    print(f"\rdownloading {dest.name}: {done / total:6.1%} of {total / 1e6:.1f} MB",
                          end="", file=sys.stderr, flush=True)
        if total:
            print(file=sys.stderr)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise ZooError(f"{url}: download failed: {one_line(exc)}") from None
    try:
        verify_checksums(part, sha256, md5)
    except ZooError as exc:
        part.unlink(missing_ok=True)
        raise ZooError(f"{url}: downloaded file rejected: {str(exc).split(': ', 1)[1]}") from None
    shutil.move(part, dest)
    return dest


def resolve(spec: str | None, manifest, sha256: str | None = None, md5: str | None = None) -> Weights:
    """Turn a checkpoint spec into a verified local file (see module doc)."""
    checkpoints = manifest.weights.get("checkpoints", {})
    name = spec or manifest.weights.get("default")
    if name in checkpoints:
        entry = checkpoints[name]
        sha256, md5 = sha256 or entry.get("sha256") or entry.get("sha256_prefix"), md5 or entry.get("md5")
        if entry.get("path"):
            return _local(manifest.dir / entry["path"], sha256, md5, builtin=True)
        spec = entry["url"]
        if not (sha256 or md5):
            raise ZooError(f"{manifest.name}: checkpoint {name!r} ({spec}) has no published checksum, so it is not "
                           f"downloaded unverified: download it and pass --weights FILE (optionally --sha256), "
                           f"or pass --weights {spec} --sha256 <expected>")
    if spec is None:
        raise ZooError(f"{manifest.name}: no --weights given and the manifest has no default checkpoint")
    if re.match(r"^https?://", spec):
        fname = spec.rstrip("/").rsplit("/", 1)[-1] or "weights.pth"
        key = (sha256 or md5).lower() if (sha256 or md5) else "unverified"
        dest = cache_dir() / "downloads" / key[:16] / fname
        if dest.is_file():
            try:
                verify_checksums(dest, sha256, md5)
                print(f"using cached download {dest}", file=sys.stderr)
            except ZooError:
                print(f"cached download {dest} is damaged; downloading again", file=sys.stderr)
                dest.unlink()
        if not dest.is_file():
            download(spec, dest, sha256, md5)
        w = _local(dest, sha256, md5)
        w.url = spec
        return w
    if not (sha256 or md5):
        # A local copy of a manifest checkpoint (same file name as its URL) is checked against
        # that checkpoint's published checksums.
        for entry in checkpoints.values():
            if entry.get("url") and entry["url"].rstrip("/").rsplit("/", 1)[-1] == Path(spec).name:
                sha256, md5 = entry.get("sha256") or entry.get("sha256_prefix"), entry.get("md5")
    return _local(Path(spec), sha256, md5)


def _local(path: Path, sha256: str | None, md5: str | None, builtin: bool = False) -> Weights:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: weights file not found")
    got_sha, got_md5 = verify_checksums(path, sha256, md5)
    return Weights(path=path.resolve(), sha256=got_sha, md5=got_md5, expected_sha256=sha256,
                   expected_md5=md5, builtin=builtin)


def read_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True; a corrupt or foreign file is a one-line ZooError."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ZooError(f"{path}: not a readable PyTorch checkpoint ({one_line(exc)[:200]})") from None
    if not isinstance(obj, dict):
        raise ZooError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state_dict")
    return obj


def unwrap_state_dict(obj: dict, strip_prefixes: tuple[str, ...] = ()) -> dict:
    """Accept a raw state_dict or an mmcv/lightning-style container {'state_dict': ...};
    strip wrapper prefixes such as 'module.' (DataParallel) from every key that has them."""
    sd = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
    out = {}
    for k, v in sd.items():
        for p in strip_prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def load_strict(module, state_dict: dict, origin: Path | str, optional_missing: tuple[str, ...] = (),
                show: int = 5) -> None:
    """Load state_dict into module requiring identical key names and shapes.

    `optional_missing` are regexes of keys that may be absent (e.g. 'num_batches_tracked' in
    pre-0.4.1 checkpoints). On any difference a one-line ZooError lists the first `show`
    missing, unexpected and wrong-shape keys with counts."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict
               and not any(re.search(p, k) for p in optional_missing)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {list(state_dict[k].shape)} != {list(v.shape)}" for k, v in expected.items()
             if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                more = f" (+{len(keys) - show} more)" if len(keys) > show else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:show])}{more}")
        raise ZooError(f"{origin}: state_dict does not match the model: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=False)  # absent keys are only the allowed optional ones

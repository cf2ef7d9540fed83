"""Checkpoints: resolve (built-in, local path or URL), download with a cache, verify checksums,
and load strictly with upstream key names.

A checkpoint spec is one of
  - None / a checkpoint name from the manifest (`weights.checkpoints.<name>`): its path or URL
    and its expected checksums come from the manifest;
  - a local file path, optionally with an expected sha256/md5 from the command line; without
    one, a file named like a manifest checkpoint's URL is checked against that checkpoint's
    published checksums, and otherwise a name ending in `-<8 hex digits>.pth` (OpenMMLab's and
    torch.hub's convention: the first 8 hex digits of the file's sha256) against that prefix;
  - an http(s) URL, with an expected sha256 or md5 (required: an unverified download is refused;
    a prefix in the URL's file name alone is not accepted for a download).

Expected checksums are hex in any case (stored lower-case): a full sha256 (64 digits), a sha256
prefix of 8 to 63 digits, an md5 (32 digits); anything else is refused before any work. The
result records every check that ran (`Weights.checks`: kind, value, source).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoo import logs
from zoo.errors import ZooError, one_line
from zoo.fileutil import temp_file_beside
from zoo.paths import cache_dir

# A download larger than this is refused (Content-Length) or aborted (while streaming).
MAX_DOWNLOAD_BYTES = 2 << 30
# OpenMMLab / torch.hub checkpoint names end in "-<first 8 hex digits of the sha256>.pth".
# Eight decimal digits read as a date ("model-20240101.pth") and are not taken as a checksum.
_NAME_PREFIX = re.compile(r"-([0-9a-f]{8})\.pth$")
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Check:
    """One checksum the file was verified against.

    kind: `sha256` (64 hex digits), `sha256-prefix` (8-63 leading hex digits) or `md5`;
    value: lower-case hex; source: `cli` (--sha256/--md5), `manifest` (model.yaml) or
    `file-name` (the `-<8 hex>.pth` suffix of an OpenMMLab-style checkpoint name)."""
    kind: str
    value: str
    source: str


def parse_checksum(what: str, value: str, algo: str, source: str) -> Check:
    """Validate and normalise an expected checksum (`algo` is sha256 or md5); `what` names
    the option or manifest field in the one-line error."""
    v = str(value).strip().lower()
    if not _HEX.fullmatch(v):
        raise ZooError(f"{what}: {value!r} is not hexadecimal")
    if algo == "md5":
        if len(v) != 32:
            raise ZooError(f"{what}: {value!r} is not an md5: an md5 has 32 hex digits, got {len(v)}")
        return Check("md5", v, source)
    if len(v) > 64:
        raise ZooError(f"{what}: {value!r} is longer than a sha256 (64 hex digits, got {len(v)})")
    if len(v) < 8:
        # one hex digit matches 1 file in 16: a prefix this short verifies nothing
        raise ZooError(f"{what}: {value!r} is too short: a sha256 prefix needs at least 8 hex digits, got {len(v)}")
    return Check("sha256" if len(v) == 64 else "sha256-prefix", v, source)


def _checks(sha256: str | None, md5: str | None, source: str,
            names: tuple[str, str] = ("--sha256", "--md5")) -> list[Check]:
    """Checks from an optional sha256 (full or prefix) and md5; `names` label them in errors."""
    out = []
    if sha256 is not None:
        out.append(parse_checksum(names[0], sha256, "sha256", source))
    if md5 is not None:
        out.append(parse_checksum(names[1], md5, "md5", source))
    return out


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _manifest_checks(manifest, name: str, entry: dict, sha256: bool = True, md5: bool = True) -> list[Check]:
    where = f"{manifest.name} model.yaml weights.checkpoints.{name}."
    out = []
    if sha256:
        key = "sha256" if entry.get("sha256") else "sha256_prefix" if entry.get("sha256_prefix") else None
        if key:
            out.append(parse_checksum(where + key, entry[key], "sha256", "manifest"))
    if md5 and entry.get("md5"):
        out.append(parse_checksum(where + "md5", entry["md5"], "md5", "manifest"))
    return out


def name_prefix(path: Path | str) -> str | None:
    """The sha256 prefix an OpenMMLab-style file name carries (`...-52dc5306.pth`), if any."""
    m = _NAME_PREFIX.search(Path(path).name)
    return m.group(1) if m and not m.group(1).isdigit() else None


@dataclass
class Weights:
    path: Path
    sha256: str
    md5: str
    url: str | None = None
    checks: list[Check] = field(default_factory=list)
    builtin: bool = False
    checkpoint: dict | None = None   # the manifest's entry this file is (name, format, provenance, licence)

    @property
    def verified(self) -> bool:
        # every check in the list ran and passed (a failing one raises): verified means at least one did
        return bool(self.checks)

    @property
    def expected_sha256(self) -> str | None:
        """The full expected sha256 when one was checked (its meaning in result schema 1.0-1.4)."""
        return next((c.value for c in self.checks if c.kind == "sha256"), None)

    def record(self) -> dict:
        return {"path": str(self.path), "url": self.url, "sha256": self.sha256, "md5": self.md5,
                "expected_sha256": self.expected_sha256, "checks": [asdict(c) for c in self.checks],
                "verified": self.verified, "builtin": self.builtin,
                **({"checkpoint": self.checkpoint} if self.checkpoint else {})}


def _verify(what: str, got_sha: str, got_md5: str, checks: list[Check]) -> None:
    """Raise a one-line ZooError starting with `what` on the first check that fails."""
    for c in checks:
        origin = {"cli": "", "manifest": " (published checksum)",
                  "file-name": " (from the file name; pass --sha256/--md5 to check against another value)"}[c.source]
        if c.kind == "sha256" and got_sha != c.value:
            raise ZooError(f"{what}: sha256 mismatch{origin}: expected {c.value}, got {got_sha}")
        if c.kind == "sha256-prefix" and not got_sha.startswith(c.value):
            raise ZooError(f"{what}: sha256 prefix mismatch{origin}: expected {c.value}..., got {got_sha}")
        if c.kind == "md5" and got_md5 != c.value:
            raise ZooError(f"{what}: md5 mismatch{origin}: expected {c.value}, got {got_md5}")


def verify_checksums(path: Path, sha256: str | None = None, md5: str | None = None) -> tuple[str, str]:
    """Return (sha256, md5) of path; raise ZooError on a mismatch with an expected value
    (a full sha256 or a prefix of at least 8 hex digits, any case)."""
    checks = _checks(sha256, md5, "cli", names=("expected sha256", "expected md5"))
    got_sha, got_md5 = _digests(path)
    _verify(str(path), got_sha, got_md5, checks)
    return got_sha, got_md5


def _download(url: str, dest: Path, checks: list[Check], timeout: float, max_bytes: int) -> tuple[str, str]:
    """Stream url into a uniquely named temporary file beside dest, hashing on the way; verify;
    publish with os.replace. Returns (sha256, md5). Any failure or interrupt removes the
    temporary file; an existing dest is only ever replaced by a verified file."""
    if not checks:
        raise ZooError(f"{url}: refusing to download weights without an expected sha256 or md5")
    tmp = temp_file_beside(dest, suffix=".part")  # unique: concurrent downloads never share it
    try:
        sha, md5 = hashlib.sha256(), hashlib.md5()
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                    if total is not None and total > max_bytes:
                        raise ZooError(f"{url}: refusing to download {total} bytes: larger than the "
                                       f"{max_bytes}-byte limit for weights")
                    done = 0
                    with logs.progress(f"      downloading {dest.name}", total, "bytes") as bar:
                        while block := resp.read(1 << 20):
                            done += len(block)
                            if done > max_bytes:
                                raise ZooError(f"{url}: download aborted after {done} bytes: larger than the "
                                               f"{max_bytes}-byte limit for weights")
                            out.write(block)
                            sha.update(block)
                            md5.update(block)
                            bar.update(done)
                    if total is not None and done != total:
                        raise ZooError(f"{url}: download failed: the connection ended after {done} of {total} bytes")
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                raise ZooError(f"{url}: download failed: {one_line(exc)}") from None
            out.flush()
            os.fsync(out.fileno())
        got = sha.hexdigest(), md5.hexdigest()
        _verify(f"{url}: downloaded file rejected", *got, checks)
        os.replace(tmp, dest)
        return got
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None, timeout: float = 60,
             max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download url to dest (verified, then published atomically), showing progress on stderr."""
    _download(url, Path(dest), _checks(sha256, md5, "cli", names=("expected sha256", "expected md5")), timeout, max_bytes)
    return Path(dest)


@dataclass
class Plan:
    """What resolve() will do: read a local `path` (builtin or not) or download `url`, and check
    the result against `checks`. Making one reads and fetches nothing."""
    checks: list[Check]
    path: Path | None = None
    url: str | None = None
    builtin: bool = False
    checkpoint: dict | None = None   # the manifest entry the file is (recorded with the weights)


def describe_checkpoint(name: str, entry: dict) -> dict:
    """What the record keeps of a manifest checkpoint entry: its name and documentation."""
    return {"name": name, **{k: " ".join(str(entry[k]).split()) for k in ("format", "provenance", "licence")
                             if entry.get(k)}}


def plan(spec: str | None, manifest, sha256: str | None = None, md5: str | None = None) -> Plan:
    """Validate the expected checksums and decide where the file comes from and what it is
    checked against (see module doc); one-line ZooError for a bad value or an unverifiable URL."""
    checks = _checks(sha256, md5, "cli")
    checkpoints = manifest.weights.get("checkpoints", {})
    name = spec or manifest.weights.get("default")
    if name in checkpoints:
        entry = checkpoints[name]
        given = {c.kind.split("-")[0] for c in checks}
        checks += _manifest_checks(manifest, name, entry, sha256="sha256" not in given, md5="md5" not in given)
        if entry.get("path"):
            return Plan(checks, path=manifest.dir / entry["path"], builtin=True,
                        checkpoint=describe_checkpoint(name, entry))
        spec = entry["url"]
        if not checks:
            raise ZooError(f"{manifest.name}: checkpoint {name!r} ({spec}) has no published checksum, so it is not "
                           f"downloaded unverified: download it and pass --weights FILE (optionally --sha256), "
                           f"or pass --weights {spec} --sha256 <expected>")
    if spec is None:
        raise ZooError(f"{manifest.name}: no --weights given and the manifest has no default checkpoint")
    if re.match(r"^https?://", spec):
        # a download needs a checksum given or published (a file name's prefix is not enough)
        if not checks:
            raise ZooError(f"{spec}: refusing to download weights without an expected sha256 or md5")
        return Plan(checks, url=spec, checkpoint=describe_checkpoint(name, checkpoints[name])
                    if name in checkpoints else None)
    if not checks:
        # A local copy of a manifest checkpoint (same file name as its URL) is checked against
        # that checkpoint's published checksums.
        for cname, entry in checkpoints.items():
            if entry.get("url") and entry["url"].rstrip("/").rsplit("/", 1)[-1] == Path(spec).name:
                return Plan(_manifest_checks(manifest, cname, entry), path=Path(spec),
                            checkpoint=describe_checkpoint(cname, entry))
    if not checks and (prefix := name_prefix(spec)):
        # as mmengine/torch.hub do for OpenMMLab files: the name's -<8 hex>.pth suffix is the
        # first 8 hex digits of the file's sha256
        checks = [Check("sha256-prefix", prefix, "file-name")]
    return Plan(checks, path=Path(spec))


def _cache_name(url: str) -> str:
    """A safe file name for a download's cache entry: the URL path's last segment (no query),
    characters other than letters, digits, '.', '_', '-' replaced by '_'."""
    last = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", urllib.parse.unquote(last))
    return "weights.pth" if name.strip(".") == "" else name


def resolve(spec: str | None, manifest, sha256: str | None = None, md5: str | None = None,
            max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = 60) -> Weights:
    """Turn a checkpoint spec into a verified local file (see module doc).

    The expected checksums are validated first (plan(): before any file is read or fetched);
    what the file was verified against is recorded in `Weights.checks`."""
    p = plan(spec, manifest, sha256, md5)
    if p.url is None:
        w = _local(p.path, p.checks, builtin=p.builtin)
        w.checkpoint = p.checkpoint
        return w
    fname = _cache_name(p.url)
    dest = cache_dir() / "downloads" / p.checks[0].value[:16] / fname
    if dest.is_file():
        try:
            w = _local(dest, p.checks)
            logs.info(f"      using cached download {dest}")
            w.url, w.checkpoint = p.url, p.checkpoint
            return w
        except ZooError:
            # replaced below by a verified download (os.replace), never deleted first: a
            # concurrent run may be publishing a good copy at this moment
            logs.warning(f"      cached download {dest} is damaged; downloading again")
    got_sha, got_md5 = _download(p.url, dest, p.checks, timeout, max_bytes)
    return Weights(path=dest.resolve(), sha256=got_sha, md5=got_md5, url=p.url, checks=p.checks,
                   checkpoint=p.checkpoint)


def _local(path: Path, checks: list[Check], builtin: bool = False) -> Weights:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: weights file not found")
    got_sha, got_md5 = _digests(path)
    _verify(str(path), got_sha, got_md5, checks)
    return Weights(path=path.resolve(), sha256=got_sha, md5=got_md5, checks=list(checks), builtin=builtin)


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

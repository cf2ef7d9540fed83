#!/usr/bin/env python3
"""Peak memory of a Cityscapes run against the number of images: does the pipeline stream?

For each N (default 2, 4, 8) this writes a synthetic full-size Cityscapes val tree in the real
layout (2048x1024 `leftImg8bit` PNGs with `gtFine` labelIds + labelTrainIds, several cities),
runs the real entrypoint in a subprocess

    python -m zoo run --model M --weights W --data TREE --batch-sizes 1 --iters 1 --warmup 0 --out TMP

(ZOO_CACHE set to a temporary folder) and records that subprocess's peak resident set size
(`ru_maxrss` from os.wait4 on it, cross-checked against VmHWM polled from /proc/<pid>/status).
A streaming pipeline keeps a bounded number of images in flight and compact metric statistics,
so the peak must not grow with N: the script exits 1 when the peak at the largest N exceeds the
peak at the smallest N by more than --max-growth (default 15%), 2 when a run fails.

Before the measured runs, one unmeasured run fills the export cache, so every measured run does
the same work apart from the images (use --no-warmup-run to measure cold runs).

Without --weights, a checkpoint with random weights is made from the model's adapter
(`load_manifest(M).adapter().build()`, a plain state_dict). Memory does not depend on the values.

Run it with the model's environment, e.g.:

    .venvs/erfnet/bin/python benchmarks/cityscapes_memory.py --model erfnet
    python3 benchmarks/cityscapes_memory.py --model fastscnn --python .venvs/fastscnn/bin/python

This is a benchmark, not a test: it takes minutes and about 100 MB of disk per image set.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # zoo.datasets.cityscapes for the label files
MODELS = ("erfnet", "fastscnn")
CITIES = ("frankfurt", "lindau", "munster")
FULL_SIZE = (2048, 1024)          # width, height of Cityscapes images
# labelIds drawn for the synthetic labels: the 19 evaluated ones, weighted towards the
# frequent classes, plus void ids (0 unlabeled, 1 ego vehicle, 4 static, 6 ground, 9 parking)
LABEL_IDS = (7, 7, 7, 8, 11, 11, 12, 13, 17, 19, 20, 21, 21, 22, 23, 24, 25, 26, 26, 27, 28, 31, 32, 33,
             0, 1, 4, 6, 9)

WEIGHTS_CODE = """import sys, torch
from zoo.manifest import load_manifest
torch.manual_seed(0)
net = load_manifest(sys.argv[1]).adapter().build()
torch.save(net.state_dict(), sys.argv[2])
"""


# ---------------------------------------------------------------- synthetic Cityscapes trees

def sample_name(i: int) -> tuple[str, str]:
    """(city, <city>_<seq>_<frame>) of the i-th synthetic image (round-robin over the cities)."""
    city = CITIES[i % len(CITIES)]
    return city, f"{city}_{i // len(CITIES):06d}_{19 + 20 * i:06d}"


def _synthetic(i: int, size: tuple[int, int]):
    """(BGR image, labelIds) of the i-th synthetic sample: smooth random colours + noise, and a
    blocky random label map, so that the PNGs have realistic sizes (a few MB / some KB)."""
    import cv2
    import numpy as np

    w, h = size
    rng = np.random.default_rng(1000 + i)
    coarse = rng.integers(0, 256, size=(max(h // 32, 1), max(w // 32, 1), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, size=img.shape, dtype=np.int16), 0, 255)
    blocks = rng.choice(np.array(LABEL_IDS, np.uint8), size=(max(h // 16, 1), max(w // 16, 1)))
    label_ids = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    return img.astype(np.uint8), label_ids


def write_sample(root: Path, i: int, size: tuple[int, int] = FULL_SIZE, split: str = "val") -> str:
    """Write the i-th synthetic sample into the tree at root (image, labelIds, labelTrainIds)."""
    import cv2

    from zoo.datasets.cityscapes import IMAGE_SUFFIX, LABEL_KINDS, to_train_ids

    city, name = sample_name(i)
    img, label_ids = _synthetic(i, size)
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for path, array in ((img_dir / f"{name}{IMAGE_SUFFIX}", img),
                        (gt_dir / f"{name}{LABEL_KINDS['labelIds']}", label_ids),
                        (gt_dir / f"{name}{LABEL_KINDS['labelTrainIds']}", to_train_ids(label_ids))):
        if not cv2.imwrite(str(path), array):
            raise OSError(f"{path}: cannot write")
    return name


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_trees(work: Path, sizes: list[int], size: tuple[int, int] = FULL_SIZE) -> dict[int, Path]:
    """One tree per N under work/trees/n<N>; the images are written once (into the largest tree)
    and hard-linked (or copied) into the smaller ones, so tree N holds samples 0..N-1."""
    biggest = max(sizes)
    pool = work / "trees" / f"n{biggest}"
    for i in range(biggest):
        t0 = time.perf_counter()
        name = write_sample(pool, i, size)
        print(f"  wrote {name} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    trees = {biggest: pool}
    for n in sizes:
        if n == biggest:
            continue
        tree = work / "trees" / f"n{n}"
        for i in range(n):
            city, name = sample_name(i)
            for rel in pool.rglob(f"{name}_*.png"):
                _link_or_copy(rel, tree / rel.relative_to(pool))
        trees[n] = tree
    return trees


# ---------------------------------------------------------------- measuring a subprocess

def _vmhwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(cmd: list[str], env: dict, log: Path) -> dict:
    """Run cmd to completion; its exit code, peak RSS (KiB: ru_maxrss of this very child via
    os.wait4, and the last VmHWM polled while it ran), wall time and the last line it printed."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, cwd=ROOT, env=env)
        polled = {"kb": None}
        stop = threading.Event()

        def poll():
            while not stop.wait(0.2):
                kb = _vmhwm_kb(proc.pid)
                if kb is not None:
                    polled["kb"] = kb

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            stdout = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            stop.set()
            poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    lines = stdout.decode(errors="replace").strip().splitlines()
    return {"rc": proc.returncode, "peak_kb": usage.ru_maxrss, "vmhwm_kb": polled["kb"],
            "seconds": time.perf_counter() - t0, "last_line": lines[-1] if lines else ""}


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- main

def default_python(model: str) -> str:
    venv = ROOT / ".venvs" / model / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _sizes(text: str) -> list[int]:
    try:
        out = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(out) < 2 or out[0] < 1:
        raise argparse.ArgumentTypeError(f"need at least two positive sizes, got {text!r}")
    return out


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/cityscapes_memory.py",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--model", choices=MODELS, help="the Cityscapes model to run (required unless --generate-only)")
    ap.add_argument("--weights", type=Path, help="checkpoint (default: random weights from the model's adapter)")
    ap.add_argument("--sizes", type=_sizes, default=[2, 4, 8], help="numbers of images, e.g. 2,4,8 (default)")
    ap.add_argument("--max-growth", type=float, default=0.15,
                    help="largest allowed relative growth of the peak RSS from the smallest to the largest N")
    ap.add_argument("--backend", default="onnxruntime", help="zoo backend (default: onnxruntime)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, help="intra-op threads passed to zoo run")
    ap.add_argument("--python", help="interpreter of the model's environment (default: .venvs/<model>/bin/python "
                    "if it exists, else this one)")
    ap.add_argument("--image-size", type=_image_size, default=FULL_SIZE, help="WIDTHxHEIGHT (default 2048x1024)")
    ap.add_argument("--no-warmup-run", action="store_true", help="do not fill the export cache before measuring")
    ap.add_argument("--workdir", type=Path, help="where trees, cache and results go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--generate-only", type=Path, metavar="DIR",
                    help="only write one synthetic tree with max(--sizes) images into DIR and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.generate_only:
        for i in range(max(args.sizes)):
            write_sample(args.generate_only, i, args.image_size)
        print(args.generate_only)
        return 0
    if not args.model:
        parser().error("--model is required (erfnet or fastscnn)")
    if not (ROOT / "models" / args.model / "model.yaml").is_file():
        print(f"error: models/{args.model}/model.yaml not found: the model is not in this checkout yet",
              file=sys.stderr)
        return 2
    if args.weights and not args.weights.is_file():
        print(f"error: {args.weights}: weights file not found", file=sys.stderr)
        return 2
    python = args.python or default_python(args.model)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cityscapes_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "ZOO_CACHE": str(work / "cache"), "PYTHONPATH": pythonpath}
    try:
        print(f"work folder {work}; python {python}", file=sys.stderr)
        weights = args.weights
        if weights is None:
            weights = work / f"{args.model}_random.pth"
            print(f"random weights -> {weights}", file=sys.stderr)
            subprocess.run([python, "-c", WEIGHTS_CODE, args.model, str(weights)], cwd=ROOT, env=env, check=True)
        print(f"writing synthetic trees ({args.image_size[0]}x{args.image_size[1]}), N = {args.sizes}",
              file=sys.stderr)
        trees = make_trees(work, args.sizes, args.image_size)

        def cmd(tree: Path, out: Path) -> list[str]:
            c = [python, "-m", "zoo", "run", "--model", args.model, "--weights", str(Path(weights).resolve()),
                 "--data", str(tree), "--batch-sizes", str(args.batch_size), "--iters", "1", "--warmup", "0",
                 "--out", str(out), "--backend", args.backend]
            return c + (["--threads", str(args.threads)] if args.threads else [])

        if not args.no_warmup_run:
            print("warm-up run (fills the export cache, not measured)", file=sys.stderr, flush=True)
            r = run_measured(cmd(trees[args.sizes[0]], work / "results_warmup"), env, work / "warmup.log")
            if r["rc"] != 0:
                print(f"error: warm-up run failed (exit {r['rc']}):\n{_tail(work / 'warmup.log')}", file=sys.stderr)
                return 2

        rows = []
        for n in args.sizes:
            print(f"N={n}: running", file=sys.stderr, flush=True)
            log = work / f"run_n{n}.log"
            r = run_measured(cmd(trees[n], work / f"results_n{n}"), env, log)
            if r["rc"] != 0:
                print(f"error: run with N={n} failed (exit {r['rc']}):\n{_tail(log)}", file=sys.stderr)
                return 2
            seen = None
            try:
                record = json.loads(Path(r["last_line"]).read_text())
                seen = record["provenance"]["dataset"]["num_samples"]
            except (OSError, ValueError, KeyError):
                pass
            if seen is not None and seen != n:
                print(f"error: the run with N={n} evaluated {seen} images", file=sys.stderr)
                return 2
            rows.append((n, r))

        base = rows[0][1]["peak_kb"]
        print(f"\n{args.model} ({args.backend}, batch {args.batch_size}, images "
              f"{args.image_size[0]}x{args.image_size[1]}): peak RSS of `python -m zoo run`")
        print(f"{'N':>4}  {'peak RSS MB':>11}  {'vs N=' + str(rows[0][0]):>8}  {'VmHWM MB':>8}  {'wall s':>7}")
        for n, r in rows:
            growth = (r["peak_kb"] - base) / base
            hwm = f"{r['vmhwm_kb'] / 1024:.0f}" if r["vmhwm_kb"] else "-"
            print(f"{n:>4}  {r['peak_kb'] / 1024:>11.0f}  {growth:>+8.1%}  {hwm:>8}  {r['seconds']:>7.1f}")
        total = (rows[-1][1]["peak_kb"] - base) / base
        slope_mb = (rows[-1][1]["peak_kb"] - base) / 1024 / (rows[-1][0] - rows[0][0])
        ok = total <= args.max_growth
        print(f"growth N={rows[0][0]} -> N={rows[-1][0]}: {total:+.1%}, {slope_mb:+.1f} MB per extra image "
              f"(limit {args.max_growth:.0%}): "
              f"{'ok, memory does not grow with the dataset' if ok else 'FAIL, memory grows with the dataset'}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep or args.workdir:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

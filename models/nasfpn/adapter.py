"""NAS-FPN (mmdetection RetinaNet R50 + NASFPN) on COCO val2017, the guide's letterbox at 640.

FACTS.md section 4, seed 003 (Ascend `detection/NAS_FPN`). The network is mmdetection 3.3.0's
own, built from the packaged config `nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco.py`. ONNX
export needs the patch in patches/ (mmcv's merge cells compute max-pool kernel sizes from traced
shapes); the environment setup and the Dockerfile apply it.

  1. cv2 BGR -> mmcv.imrescale to (640, 640) (long side 640, int(x*f + 0.5), bilinear) -> mean/std
     in RGB -> centre zero padding to 640x640 (the guide's mmdetection_coco_preprocess.py);
  2. the graph: backbone, NAS-FPN (7 stages), RetinaSepBNHead; its single output `output` is
     [N, 76725, 84]: per anchor (levels P3-P7, rows (y, x, anchor)) the 80 sigmoid scores and the 4
     box deltas, so the postprocess needs nothing but this tensor;
  3. postprocess (postprocess.py, numpy): mmdet's test_cfg (per-level top 1000 above 0.05, delta
     decoding, class-aware NMS 0.5, 100 detections) in 640 coordinates, then the guide's mapping
     back to the original image; labels -> COCO category ids; pycocotools bbox evaluation.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from zoo.adapter import Dataset, Metric, ModelAdapter
from zoo.coco import (ANNOTATIONS, CLASSES, IMAGES, evaluate, image_file, load_coco, parse_image_id, to_results,
                      write_results)
from zoo.errors import ZooError
from zoo.fileutil import check_writable_dir, text_sha256
from zoo.ids import read_id_lines, shown
from zoo.mm import letterbox_input
from zoo.images import imread
from zoo.weights import load_strict

from models.nasfpn.postprocess import NUM_CLASSES, DetectCfg, detect, letterbox_geometry, to_original

CONFIG = "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco.py"


def letterbox(bgr: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    """The guide's preprocessing -> (CHW float32 size x size, geometry)."""
    h, w = bgr.shape[:2]
    g = letterbox_geometry(w, h, size)
    return letterbox_input(bgr, size, g), g


class CocoVal(Dataset):
    name = "coco_val2017"

    def __init__(self, root: Path, ids_file: Path | None, limit: int | None, expected: int | None,
                 builtin: bool, size: int):
        root = Path(root)
        if not root.is_dir():
            raise ZooError(f"{shown(root)}: dataset folder not found")
        self.root, self.ids_file, self.limit, self.expected, self.builtin, self.size = root, ids_file, limit, expected, builtin, size
        self.ann_file = root / ANNOTATIONS
        self.coco = load_coco(self.ann_file)
        known = self.coco.getImgIds()  # the annotation file's order (mmdet's CocoDataset order)
        if ids_file:
            # ids or file names, one a line; duplicates are refused after parsing ('128372' and
            # '000000128372.jpg' are the same image)
            lines = read_id_lines(Path(ids_file), parse_image_id)
            missing = [(n, i) for n, i in lines if i not in self.coco.imgs]
            if missing:
                n, i = missing[0]
                raise ZooError(f"{shown(ids_file)}: line {n}: image id {i} is not in {shown(self.ann_file)}"
                               + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
            img_ids = [i for _, i in lines]
        else:
            img_ids = known
        if limit is not None:
            img_ids = img_ids[:limit]
        self.image_ids = [int(i) for i in img_ids]
        self.ids = [str(i) for i in self.image_ids]
        for i in self.image_ids:
            p = self.image_path(i)
            if not p.is_file():
                raise ZooError(f"{shown(p)}: image {i} of {shown(self.ann_file)} is missing")

    def image_path(self, image_id: int) -> Path:
        return image_file(self.coco, self.root / IMAGES, image_id, self.ann_file)

    def read(self, sid: str):
        iid = int(sid)
        img = imread(self.image_path(iid), cv2.IMREAD_COLOR)
        info = self.coco.imgs[iid]
        if (img.shape[1], img.shape[0]) != (info["width"], info["height"]):
            raise ZooError(f"{shown(self.image_path(iid))}: image is {img.shape[1]}x{img.shape[0]}, the annotation file says "
                           f"{info['width']}x{info['height']}")
        return iid, img

    def preprocess(self, raw):
        iid, img = raw
        x, geo = letterbox(img, self.size)
        return x, {"image_id": iid, "width": img.shape[1], "height": img.shape[0], "geometry": geo}

    def provenance(self) -> dict:
        return {"name": self.name, "path": str(self.root), "split": "val2017",
                "ids_file": str(self.ids_file) if self.ids_file else None,
                "num_samples": len(self.ids), "expected_samples": self.expected,
                "ids_sha256": text_sha256("\n".join(self.ids)), "limit": self.limit, "builtin": self.builtin,
                "preparation": {"annotations": str(self.ann_file),
                                "step": f"streamed; mmcv.imrescale to ({self.size}, {self.size}), RGB mean/std, "
                                        f"centre zero pad to {self.size}x{self.size} (the guide's letterbox)"}}


class CocoBoxAP(Metric):
    """pycocotools COCOeval bbox over the evaluated images (AP@[.5:.95] headline, all 12 stats,
    per-class AP). Optionally writes the COCO results JSON and per-image drawings."""

    metric = "map"

    def __init__(self, name: str, description: str, coco, size: int, cfg: DetectCfg,
                 results_json: str = "", visualize: str = "", image_path=None):
        self.name, self.description = name, description
        self.coco, self.size, self.cfg = coco, size, cfg
        self.results: list[dict] = []
        self.image_ids: list[int] = []
        self.results_json, self.visualize, self.image_path = results_json, visualize, image_path
        self._stats = None

    def update(self, outputs, targets):
        if outputs.ndim != 3 or outputs.shape[-1] != NUM_CLASSES + 4:
            raise ValueError(f"metric {self.name}: expected [N, anchors, {NUM_CLASSES + 4}], got {outputs.shape}")
        for raw, t in zip(outputs, targets):
            boxes, scores, labels = detect(raw, (self.size, self.size), self.cfg)
            boxes = to_original(boxes, t["width"], t["height"], self.size)
            keep = scores >= self.cfg.score_thr  # the guide drops < 0.05 again after mapping
            self.results += to_results(t["image_id"], boxes[keep], scores[keep], labels[keep])
            self.image_ids.append(t["image_id"])
            if self.visualize:
                draw(self.image_path(t["image_id"]), Path(self.visualize) / f"{t['image_id']:012d}.jpg",
                     boxes[keep], scores[keep], labels[keep])
        self._stats = None

    def stats(self) -> dict:
        if self._stats is None:
            self._stats = evaluate(self.coco, self.results, self.image_ids)
            if self.results_json:
                write_results(Path(self.results_json), self.results)
        return self._stats

    def compute(self) -> dict:
        s = self.stats()
        out = {k: v for k, v in s.items() if k not in ("summary", "per_class")}
        out["num_samples"] = len(self.image_ids)
        out["num_detections"] = len(self.results)
        return out

    def per_class(self) -> list[dict]:
        return self.stats()["per_class"]


def draw(src: Path, dst: Path, boxes, scores, labels, min_score: float = 0.3) -> None:
    """The guide's optional visualisation: boxes with class and score on the original image."""
    from zoo.fileutil import atomic_write_bytes
    img = imread(src, cv2.IMREAD_COLOR)
    for (x1, y1, x2, y2), s, lab in zip(boxes, scores, labels):
        if s < min_score:
            continue
        color = tuple(int(c) for c in np.random.default_rng(int(lab)).integers(64, 256, 3))
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
        cv2.putText(img, f"{CLASSES[int(lab)]} {s:.2f}", (int(x1), max(int(y1) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img)
    if not ok:
        raise ZooError(f"{shown(dst)}: cannot encode the drawing")
    try:
        atomic_write_bytes(dst, buf.tobytes())
    except OSError as exc:
        raise ZooError(f"{shown(dst)}: cannot write the drawing ({exc.strerror or exc})") from None


def check_outputs(options: dict) -> None:
    """results_json (a file, written atomically after the run) and visualize (a folder of
    drawings) must be writable: checked when the dataset is opened, not after the whole run."""
    for key in ("results_json", "visualize"):
        value = options.get(key)
        if value in (None, "", False):
            continue
        if not isinstance(value, str):
            raise ZooError(f"nasfpn: option {key} must be a path, got {value!r}")
        path = Path(value)
        if key == "visualize":
            if path.exists() and not path.is_dir():
                raise ZooError(f"{shown(path)}: option visualize needs a folder, this is a file")
            check_writable_dir(path, f"folder for option {key}")
        else:
            if path.is_dir():
                raise ZooError(f"{shown(path)}: option results_json needs a file name, this is a folder")
            check_writable_dir(path.parent, f"folder for option {key}")


class NasFpnExport:
    @staticmethod
    def wrap(detector):
        import torch

        class NasFpnForward(torch.nn.Module):
            """extract_feat -> RetinaSepBNHead -> per level permute(0, 2, 3, 1) -> [sigmoid(cls) | deltas]
            concatenated over the 5 levels: [N, sum(H*W*9), 84]."""

            def __init__(self, det):
                super().__init__()
                self.det = det

            def forward(self, x):
                cls_scores, bbox_preds = self.det.bbox_head(self.det.extract_feat(x))
                levels = []
                for c, b in zip(cls_scores, bbox_preds):
                    n = c.shape[0]
                    c = c.permute(0, 2, 3, 1).reshape(n, -1, NUM_CLASSES).sigmoid()
                    b = b.permute(0, 2, 3, 1).reshape(n, -1, 4)
                    levels.append(torch.cat([c, b], dim=-1))
                return torch.cat(levels, dim=1)

        return NasFpnForward(detector)


class NasFpnAdapter(ModelAdapter):
    run_only_options = ("visualize", "results_json")

    def build(self):
        from zoo.mm import build_model, load_config
        det = build_model("mmdet", load_config("mmdet", CONFIG))
        return NasFpnExport.wrap(det)

    def checkpoint_payload(self, module) -> dict:
        return {"meta": {"note": "written by the zoo"}, "state_dict": module.det.state_dict()}

    def load_weights(self, module, path: Path) -> None:
        from zoo.mm import checkpoint_state_dict
        sd, _meta = checkpoint_state_dict(path)
        load_strict(module.det, sd, path)

    @property
    def size(self) -> int:
        return int(self.manifest.input["shape"][-1])

    def dataset(self, data, ids_file, limit, cache):
        d = self.manifest.data
        builtin = data is None
        if builtin:
            data = self.manifest.dir / d["builtin"]["path"]
        check_outputs(self.options)
        self._dataset = CocoVal(Path(data), ids_file, limit, None if builtin else d["expected_samples"], builtin, self.size)
        return self._dataset

    def test_cfg(self) -> DetectCfg:
        t = self.manifest.raw["postprocess"]
        return DetectCfg(nms_pre=t["nms_pre"], score_thr=t["score_thr"], iou_threshold=t["iou_threshold"],
                       max_per_img=t["max_per_img"], min_bbox_size=t["min_bbox_size"])

    def metrics(self):
        ds = getattr(self, "_dataset", None)
        if ds is None:
            raise ZooError("nasfpn: metrics need the dataset (call dataset() first)")
        ref = self.manifest.reference["protocols"]["guide"]
        return [CocoBoxAP("guide", ref["description"], ds.coco, self.size, self.test_cfg(),
                          results_json=self.options.get("results_json") or "",
                          visualize=self.options.get("visualize") or "", image_path=ds.image_path)]

    def decision(self, outputs):
        return outputs[..., :NUM_CLASSES] > self.test_cfg().score_thr

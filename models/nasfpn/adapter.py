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
     back to the original image, detections below 0.05 dropped again, labels -> COCO category ids:
     one image's zoo.predictions.Detections (boxes rounded to 3 decimals, scores to 5, as the
     results JSON keeps them);
  4. pycocotools bbox evaluation of those rows (zoo.metrics.coco.CocoBoxAP).

Data: the COCO family (zoo.datasets.coco), val2017. The run-only options `results_json` and
`visualize` are the metric's outputs (the rows it scored, drawings), checked before any work.
"""
from __future__ import annotations

from pathlib import Path

from zoo.datasets.coco import CAT_IDS, CocoDetection
from zoo.errors import ZooError
from zoo.fileutil import check_writable_dir
from zoo.ids import shown
from zoo.metrics.coco import CocoBoxAP
from zoo.mm import OpenMMLabAdapter, letterbox_input
from zoo.predictions import Detections

from models.nasfpn.postprocess import NUM_CLASSES, DetectCfg, detect, letterbox_geometry, to_original

CONFIG = "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco.py"


def check_outputs(options: dict) -> None:
    """results_json (a file, written atomically after the run) and visualize (a folder of
    drawings) must be writable: checked before any work (check_source), not after the whole run."""
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


class NasFpnAdapter(OpenMMLabAdapter):
    inner = "det"  # the OpenMMLab model inside the export wrapper
    run_only_options = ("visualize", "results_json")

    def build(self):
        from zoo.mm import build_model, load_config
        det = build_model("mmdet", load_config("mmdet", CONFIG))
        return NasFpnExport.wrap(det)

    def check_source(self, source) -> None:
        if not isinstance(source, CocoDetection):
            raise ZooError(f"nasfpn: needs a COCO source, got {source.family}")
        check_outputs(self.options)

    def test_cfg(self) -> DetectCfg:
        return DetectCfg(**self.manifest.postprocess)

    def preprocess(self, sample):
        """The guide's letterbox (module docstring, step 1) -> (CHW float32, the image's id and size)."""
        h, w = sample.image.shape[:2]
        x = letterbox_input(sample.image, self.size, letterbox_geometry(w, h, self.size))
        info = sample.info
        return x, {"image_id": info["image_id"], "width": info["width"], "height": info["height"]}

    def postprocess(self, output, meta) -> Detections:
        cfg = self.test_cfg()
        boxes, scores, labels = detect(output, (self.size, self.size), cfg)
        boxes = to_original(boxes, meta["width"], meta["height"], self.size)
        keep = scores >= cfg.score_thr  # the guide drops < 0.05 again after mapping
        det = Detections.from_boxes(meta["image_id"], boxes[keep], scores[keep],
                                    [CAT_IDS[int(lab)] for lab in labels[keep]])
        for row in det.rows:  # the precision the results JSON has always kept
            row["bbox"] = [round(v, 3) for v in row["bbox"]]
            row["score"] = round(row["score"], 5)
        return det

    def target(self, sample) -> int:
        return sample.info["image_id"]

    def metrics(self, source):
        ref = self.manifest.reference["protocols"]["guide"]
        return [CocoBoxAP("guide", ref["description"], source.coco, results_json=self.options["results_json"],
                          visualize=self.options["visualize"], image_path=source.image_path)]

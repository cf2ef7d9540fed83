"""Fast-SCNN on Cityscapes val: the guide's preprocessing, label mapping, order and metrics.

FACTS.md section 3, seed 002. Data flow, as upstream (testval mode) and the guide:
  1. image (zoo.datasets.cityscapes: PIL `Image.open().convert('RGB')`) -> np.array -> /255
     (ToTensor) -> Normalize(mean, std of the manifest's `preprocess`) in RGB -> CHW float32, full
     size (1024x2048 for Cityscapes), no resize, crop or flip;
  2. label: `gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (the manifest's `data.source.labels`)
     mapped labelId -> trainId (unmapped ids -> 255 here, -1 upstream: the same pixels are
     ignored); when a sample has only `_gtFine_labelTrainIds.png`, that file (same values) is used;
  3. prediction: the argmax of the 19 logits (`labels`) and the argmax of their truncation
     (`labels_trunc`: upstream's pixAcc takes `argmax(output.long())`), both uint8;
  4. order: sorted by city then name by default; `--ids-file` gives an explicit order (sample names,
     or the guide's `sort.log` lines `<name>_leftImg8bit.png`). The guide's own order is the
     manifest's `guide_order` split (`guide_order.txt`): its reported running averages are only
     comparable in that order.

The exported ONNX graph is fixed to one spatial size (the exact pyramid pooling is a constant
averaging for the size seen at export, and zoo.run exports with the source's first samples), so a
source must have one image size: mixed sizes are refused before any work (check_source), as is an
`export_hw` option that names another size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.adapter import ModelAdapter
from zoo.datasets.cityscapes import CLASSES, read_order
from zoo.errors import ZooError
from zoo.ids import shown
from zoo.metrics.segmentation import RunningAverageMetric, SegmentronMetric, class_argmax_pair
from zoo.checkpoints import load_strict, read_checkpoint, unwrap_state_dict


def normalize(rgb: np.ndarray, mean, std) -> np.ndarray:
    """ToTensor + Normalize in float32: ((rgb / 255) - mean) / std per RGB channel; HWC -> CHW."""
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    for c in range(3):  # the same float32 operations, per channel, straight into CHW
        np.divide(rgb[..., c], np.float32(255.0), out=out[c], dtype=np.float32)
        np.subtract(out[c], mean[c], out=out[c])
        np.divide(out[c], std[c], out=out[c])
    return out


class FastSCNNAdapter(ModelAdapter):
    def build(self):
        from models.fastscnn.model import FastSCNN
        o = self.options
        return FastSCNN(num_classes=o["num_classes"], aux=o["aux"], ppm=o["ppm"], aux_outputs=o["aux_outputs"])

    def load_weights(self, module, path: Path) -> None:
        # SegmenTron saves a raw state_dict (model.module.state_dict() under DataParallel); accept an
        # {'state_dict': ...} container and a 'module.' prefix, nothing looser. Strict, aux heads included.
        sd = unwrap_state_dict(read_checkpoint(path), strip_prefixes=("module.",))
        load_strict(module, sd, path)

    def preprocess(self, sample):
        p = self.manifest.preprocess
        return normalize(np.asarray(sample.image), p["mean"], p["std"]), None

    def postprocess(self, output, meta):
        labels, labels_trunc = class_argmax_pair(output)
        return {"labels": labels.astype(np.uint8), "labels_trunc": labels_trunc.astype(np.uint8)}

    def check_source(self, source) -> None:
        """One image size for the whole source (the graph's pyramid pooling is fixed to it), an
        explicit `export_hw` must be that size, and ppm=guide_avgpool needs a pyramid pooling input
        of at least 6 rows and columns. The export itself is keyed by the input shape."""
        sizes = list(source.image_sizes().items())
        (h, w), first = sizes[0]
        if len(sizes) > 1:
            (oh, ow), other = sizes[1]
            raise ZooError(f"{shown(other)}: image is {ow}x{oh} but {shown(first.name)} is {w}x{h}: one run "
                           f"evaluates one image size (the exported graph, with its exact pyramid pooling, is "
                           f"fixed to the size it was exported at)")
        want = self.options["export_hw"]
        if want != "auto" and want != f"{h}x{w}":
            raise ZooError(f"{shown(source.root)}: images are {h}x{w} (HxW) but the option export_hw={want} was given")
        if self.options["ppm"] == "guide_avgpool":
            from models.fastscnn.model import PPM_BINS, guide_kernel_stride, ppm_input_size
            try:
                for length in ppm_input_size(h, w):
                    for bins in PPM_BINS:
                        guide_kernel_stride(length, bins)
            except ValueError as exc:
                raise ZooError(f"{shown(source.root)}: images are {h}x{w} (HxW): {exc}") from None

    def guide_order(self) -> list[str]:
        """The guide's evaluation order (its sort.log): the manifest's `guide_order` split."""
        return read_order(self.manifest.dir / self.manifest.data["splits"]["guide_order"]["ids_file"])

    def metrics(self, source):
        protos = self.manifest.reference["protocols"]
        comparable = source.ids == self.guide_order()
        order = f"the guide's sort.log order ({shown(source.opened.ids_file)})" if comparable else source.order
        desc = protos["guide"]["description"] + f" [evaluated in order: {order}]"
        reason = None
        if source.complete and not comparable:  # (a subset is marked not comparable by the run itself)
            reason = ("the running average depends on the image order and this run did not use the guide's "
                      "sort.log order")
            desc += f" [{reason}: not comparable to the guide's figure]"
        return [RunningAverageMetric("guide", desc, CLASSES, comparable=comparable, not_comparable_reason=reason),
                SegmentronMetric("upstream", protos["upstream"]["description"], CLASSES)]

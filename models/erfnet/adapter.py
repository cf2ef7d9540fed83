"""ErfNet on Cityscapes val: the guide's preprocessing, its iouEval protocol and its BN-weight edit.

FACTS.md section 2, seed 001 (Ascend `segmentation/ErfNet`), upstream Eromera/erfnet_pytorch
@ d4a46fa (`eval/eval_iou.py`, `eval/transform.py`, `eval/iouEval.py`). Data flow:
  1. image (zoo.datasets.cityscapes: PIL open -> convert('RGB')) -> torchvision Resize(512,
     BILINEAR), i.e. the shorter side to 512 and the longer to int(512 * long / short) with PIL's
     (antialiased) bilinear resize (2048x1024 -> 1024x512) -> ToTensor: RGB, CHW float32 in [0, 1],
     no mean/std;
  2. label: gtFine labelTrainIds (the manifest's `data.source.labels`; trainIds derived from
     labelIds when only those exist) -> PIL 'L' -> convert('P') (value-preserving) ->
     Resize(512, NEAREST) -> Relabel(255 -> 19);
  3. output: 20 logits per pixel at 512x1024 (19 trainIds + class 19 = void); the prediction is
     the argmax over all 20 (`labels`, uint8);
  4. metric: upstream iouEval(20, ignoreIndex=19) accumulated over the dataset (zoo.metrics).

Images and labels are paired by name (the Ascend postprocess does; upstream pairs two separately
sorted file lists by position, which gives the same pairs on a complete dataset).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from zoo.adapter import ModelAdapter
from zoo.datasets.cityscapes import CLASSES
from zoo.errors import ZooError
from zoo.metrics.segmentation import IouEvalMetric, class_argmax
from zoo.checkpoints import load_strict, read_checkpoint, unwrap_state_dict

NUM_CLASSES = 20         # 19 Cityscapes trainIds + class 19 ("void"), eval_iou.py NUM_CLASSES
VOID = 19                # Relabel(255, 19) and iouEval's ignoreIndex

# The checkpoint may predate num_batches_tracked (PyTorch < 0.4.1), and the encoder's
# output_conv is used only in encoder-only mode (FACTS.md s.2): both may be absent.
OPTIONAL_KEYS = (r"\.num_batches_tracked$", r"^encoder\.output_conv\.")

# The guide's modify_bn_weights.py: every initializer whose name matches (re.search) this
# pattern gets value = where(|v| > 0.01, v, 0.01).
GUIDE_BN_REGEX = r".*bn.*weight"
GAMMA_FLOOR = 0.01
# In non_bottleneck_1d, bn1 follows conv1x3_1 and bn2 follows conv1x3_2 directly: the exporter
# folds those BatchNorms into the Conv in eval mode (PyTorch >= 1.7).
FOLDED_INTO = {"bn1": "conv1x3_1", "bn2": "conv1x3_2"}


# ----------------------------------------------------------------------------- preprocessing

def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) of torchvision Resize(short) for an image of width x height: the shorter side
    becomes `short`, the longer int(short * long / short_side) (torchvision's rule, truncating)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def image_to_input(img, short: int) -> np.ndarray:
    """Resize(short, BILINEAR) + ToTensor on an RGB PIL image -> CHW float32 in [0, 1]."""
    from PIL import Image
    size = resized_size(*img.size, short)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    hwc = np.asarray(img, dtype=np.uint8)
    out = np.empty((3, *hwc.shape[:2]), dtype=np.float32)
    # float32(v) / 255 per element, written straight into CHW (one pass, no float HWC copy)
    np.divide(hwc.transpose(2, 0, 1), np.float32(255.0), out=out, dtype=np.float32)
    return out


def label_to_target(train_ids: np.ndarray, short: int, void: int = VOID) -> np.ndarray:
    """trainIds (uint8, 255 = ignore) -> PIL 'L' -> convert('P') -> Resize(short, NEAREST) ->
    Relabel(255 -> void), as uint8 HxW."""
    from PIL import Image
    lab = Image.fromarray(np.ascontiguousarray(train_ids, dtype=np.uint8), mode="L").convert("P")
    size = resized_size(*lab.size, short)
    if size != lab.size:
        lab = lab.resize(size, Image.NEAREST)
    out = np.array(lab, dtype=np.uint8)
    out[out == 255] = void
    return out


# ----------------------------------------------------------------------------- the BN-weight edit

def clamp_gamma(gamma: np.ndarray, floor: float = GAMMA_FLOOR) -> np.ndarray:
    """The guide's np.where(abs(v) > floor, v, floor), in float32."""
    g = np.asarray(gamma, dtype=np.float32)
    return np.where(np.abs(g) > floor, g, np.float32(floor)).astype(np.float32)


def _scope_module(node_name: str) -> str:
    """'/encoder/layers.1/conv1x3_1/Conv' -> 'encoder.layers.1.conv1x3_1' (the exporter names
    nodes by the module scope they come from)."""
    return node_name.strip("/").rsplit("/", 1)[0].replace("/", ".")


class _Initializers:
    """Initializer access through the Identity nodes the exporter adds when it de-duplicates
    equal tensors, with copy-on-write for a tensor that something else also reads."""

    def __init__(self, graph):
        self.graph = graph
        self.by_name = {t.name: t for t in graph.initializer}
        self.alias = {n.output[0]: n.input[0] for n in graph.node
                      if n.op_type == "Identity" and n.input[0] in self.by_name}
        self.uses: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.rewritten = 0

    def get(self, name: str) -> np.ndarray:
        from onnx import numpy_helper
        src = self.alias.get(name, name)
        if src not in self.by_name:
            raise ZooError(f"ONNX edit: {name!r} is not an initializer")
        return numpy_helper.to_array(self.by_name[src])

    def set(self, node, index: int, value: np.ndarray) -> None:
        """Give `node.input[index]` the new value: in place when only this node reads the
        tensor, else as a new initializer (a shared tensor keeps its value for its other users)."""
        from onnx import numpy_helper
        name = node.input[index]
        if name in self.by_name and self.uses.get(name, 0) == 1:
            self.by_name[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        else:
            new = f"{name}.bnclamp"
            k = 1
            while new in self.by_name:
                new, k = f"{name}.bnclamp{k}", k + 1
            t = self.graph.initializer.add()
            t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), new))
            self.by_name[new] = t
            self.uses[name] -= 1
            node.input[index] = new
        self.rewritten += 1


def clamp_bn_weights_onnx(model, module, mode, floor: float = GAMMA_FLOOR) -> dict:
    """The guide's modify_bn_weights.py on our export, in place.

    mode "regex": exactly the guide's script on this file: the scale of every BatchNormalization
      node whose initializer name matches `.*bn.*weight` (on an export by PyTorch >= 1.7, the 5
      BatchNorms that follow a Concat or ConvTranspose; the other 34 are folded into their Conv).
    mode True: every one of the 39 BatchNorm gammas, which is what the script does on an export
      that keeps every BatchNormalization node (PyTorch 1.5/1.6, the seed's "pytorch >= 1.5.0"):
      BN nodes get their scale clamped; a BN folded into its Conv gets that Conv's weight and bias
      recomputed from `module` with the clamped gamma (W * g/sqrt(var+eps), beta + g/sqrt(var+eps)
      * (b - mean)), after checking that the file holds the unclamped folding of the same module.
    Returns what changed, in the guide's terms (BN weight tensors / values) and in the file's."""
    if mode is True and module is None:
        raise ZooError("ONNX edit bn_weight_clamp=true needs the loaded PyTorch module (none was given)")
    graph = model.graph
    inits = _Initializers(graph)
    changed_layers, values_changed, seen = [], 0, set()
    bn_nodes = [n for n in graph.node if n.op_type == "BatchNormalization"]
    for node in bn_nodes:
        scale_name = node.input[1]
        if mode == "regex" and not re.search(GUIDE_BN_REGEX, scale_name):
            continue
        layer = _scope_module(node.name) if node.name else scale_name.rsplit(".", 1)[0]
        seen.add(layer)
        gamma = inits.get(scale_name)
        new = clamp_gamma(gamma, floor)
        n = int((new != gamma).sum())
        if n:
            inits.set(node, 1, new)
            changed_layers.append(layer)
            values_changed += n
    folded = 0
    if mode is True:
        import torch
        bns = {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        convs = {}
        for n in graph.node:
            if n.op_type == "Conv" and n.name:
                convs.setdefault(_scope_module(n.name), []).append(n)
        for name, bn in bns.items():
            if name in seen:
                continue
            parent, attr = name.rsplit(".", 1)
            conv_name = f"{parent}.{FOLDED_INTO.get(attr, '?')}"
            nodes = convs.get(conv_name, [])
            if attr not in FOLDED_INTO or len(nodes) != 1 or len(nodes[0].input) < 3:
                raise ZooError(f"ONNX edit: BatchNorm {name} is neither a BatchNormalization node nor folded "
                               f"into a single Conv {conv_name} with bias in the exported graph")
            node = nodes[0]
            conv = module.get_submodule(conv_name)
            with torch.no_grad():
                w = conv.weight.detach().float()
                b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0])
                mean, var = bn.running_mean.float(), bn.running_var.float()
                gamma, beta = bn.weight.detach().float(), bn.bias.detach().float()
                gamma_c = torch.from_numpy(clamp_gamma(gamma.numpy(), floor))

                def fold(g):
                    s = g / torch.sqrt(var + bn.eps)
                    return (w * s.reshape(-1, 1, 1, 1)).numpy(), (beta + s * (b - mean)).numpy()

                w0, b0 = fold(gamma)
                gw, gb = inits.get(node.input[1]), inits.get(node.input[2])
                scale = max(float(np.abs(w0).max()), 1e-12)
                if gw.shape != w0.shape or gb.shape != b0.shape or \
                        float(np.abs(gw - w0).max()) > 1e-5 * scale or \
                        float(np.abs(gb - b0).max()) > 1e-5 * max(float(np.abs(b0).max()), 1e-12):
                    raise ZooError(f"ONNX edit: Conv {node.name} does not hold {conv_name} folded with {name} "
                                   "(the file was not exported from this module)")
                n = int((gamma_c != gamma).sum())
                folded += 1
                seen.add(name)
                if n:
                    w1, b1 = fold(gamma_c)
                    inits.set(node, 1, w1)
                    inits.set(node, 2, b1)
                    changed_layers.append(name)
                    values_changed += n
        missing = sorted(set(bns) - seen)
        if missing:
            raise ZooError(f"ONNX edit: BatchNorm layers not found in the exported graph: {missing[:5]}")
    return {"scope": "every BatchNorm gamma" if mode is True else f"BatchNormalization scales named {GUIDE_BN_REGEX}",
            "floor": floor, "bn_layers_considered": len(seen), "bn_nodes": len(bn_nodes), "bn_folded_into_conv": folded,
            "initializers_changed": len(changed_layers), "values_changed": values_changed,
            "onnx_tensors_rewritten": inits.rewritten, "changed_layers": changed_layers[:30]}


# ----------------------------------------------------------------------------- the adapter

class ErfNetAdapter(ModelAdapter):
    def build(self):
        from models.erfnet.model import ERFNet
        return ERFNet(num_classes=NUM_CLASSES)

    def load_weights(self, module, path: Path) -> None:
        # The official file is a raw state_dict saved from DataParallel ('module.' on every key);
        # accept it bare too. Strict about every name and shape, except the two optional groups.
        sd = unwrap_state_dict(read_checkpoint(path), strip_prefixes=("module.",))
        load_strict(module, sd, path, optional_missing=OPTIONAL_KEYS)

    @property
    def short_side(self) -> int:
        return int(self.manifest.preprocess["short_side"])

    def preprocess(self, sample):
        return image_to_input(sample.image, self.short_side), None

    def postprocess(self, output, meta):
        return {"labels": class_argmax(output).astype(np.uint8)}

    def target(self, sample):
        return label_to_target(sample.label, self.short_side)

    def metrics(self, source):
        proto = self.manifest.reference["protocols"]["guide"]
        return [IouEvalMetric("guide", proto["description"], classes=CLASSES, n_outputs=NUM_CLASSES, ignore=VOID)]

    def export_edit_key(self) -> str:
        mode = self.options["bn_weight_clamp"]
        if mode is False:
            return ""
        return f"bnclamp{GAMMA_FLOOR:g}" + ("-regex" if mode == "regex" else "")

    def edit_onnx(self, model, module):
        mode = self.options["bn_weight_clamp"]
        if mode is False:
            return None
        return clamp_bn_weights_onnx(model, module, mode)

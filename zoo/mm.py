"""OpenMMLab glue shared by the models built with mmsegmentation / mmdetection (fcn8s, nasfpn).

The models come from the configs that ship inside the installed package (`<pkg>/.mim/configs`),
built through the package's own registry, with no pretrained-backbone download. Imported only
by those models' adapters: the zoo core does not need OpenMMLab."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from zoo.adapter import ModelAdapter
from zoo.errors import ZooError, one_line
from zoo.checkpoints import load_strict

# The data preprocessors of both configs (SegDataPreProcessor / DetDataPreprocessor): RGB, 0-255.
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def imnormalize(bgr: np.ndarray) -> np.ndarray:
    """mmcv.imnormalize(img, MEAN, STD, to_rgb=True): BGR uint8 -> HWC float32 RGB."""
    import cv2
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    return (rgb - MEAN) * (np.float32(1.0) / STD)


def imrescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv.imrescale's output (new_w, new_h, factor) for a (long, short) scale:
    factor = min(long / max(h, w), short / min(h, w)), sizes int(x * factor + 0.5)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5), factor


def letterbox_input(bgr: np.ndarray, size: int, geometry: dict) -> np.ndarray:
    """The guides' letterbox: bilinear resize (cv2) to geometry's new_w x new_h, normalise, paste
    at (pad_left, pad_top) into a zero size x size canvas -> CHW float32."""
    import cv2
    g = geometry
    img = cv2.resize(bgr, (g["new_w"], g["new_h"]), interpolation=cv2.INTER_LINEAR)
    x = np.zeros((size, size, 3), dtype=np.float32)
    x[g["pad_top"]:g["pad_top"] + g["new_h"], g["pad_left"]:g["pad_left"] + g["new_w"]] = imnormalize(img)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def package_config(package: str, relpath: str) -> Path:
    """`<package>/.mim/configs/<relpath>` of the installed package (e.g. mmseg, 'fcn/x.py')."""
    try:
        mod = importlib.import_module(package)
    except Exception as exc:
        raise ZooError(f"cannot import {package} ({one_line(exc)[:200]}): run `invoke setup --model <name>` "
                       f"for the model's pinned environment") from None
    path = Path(mod.__file__).parent / ".mim" / "configs" / relpath
    if not path.is_file():
        raise ZooError(f"{path}: config not found in the installed {package} {getattr(mod, '__version__', '?')}")
    return path


def load_config(package: str, relpath: str):
    """mmengine Config of a packaged config, with pretrained/init downloads switched off."""
    from mmengine.config import Config
    path = package_config(package, relpath)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:
        raise ZooError(f"{path}: cannot read the config ({one_line(exc)[:200]})") from None
    model = cfg.model
    model.pop("pretrained", None)
    if "backbone" in model:
        model.backbone.pop("init_cfg", None)
    return cfg


def build_model(package: str, cfg):
    """Build cfg.model through `package`'s registry (mmseg / mmdet), SyncBN reverted to BatchNorm
    as the guides' exporters do, in eval mode."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    scope = {"mmseg": "mmseg", "mmdet": "mmdet"}[package]
    init_default_scope(scope)
    registry = importlib.import_module(f"{package}.registry").MODELS
    importlib.import_module(f"{package}.models")  # registers the model classes
    model = registry.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def checkpoint_state_dict(path: Path) -> tuple[dict, dict]:
    """(state_dict, meta) of an mmcv/mmengine checkpoint {'meta', 'state_dict', ...} or of a raw
    state_dict; loaded with weights_only=True (a checkpoint holding arbitrary objects is refused)."""
    from zoo.checkpoints import read_checkpoint, unwrap_state_dict
    obj = read_checkpoint(path)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return unwrap_state_dict(obj, ("module.",)), meta


class OpenMMLabAdapter(ModelAdapter):
    """What the mmseg/mmdet models share: the network is OpenMMLab's, inside an export wrapper that
    keeps it as the attribute named by `inner`; checkpoints are mmcv's {'meta', 'state_dict'}
    containers loaded strictly into it; the input is square (`size`, the manifest's input)."""
    inner: str = ""

    def checkpoint_payload(self, module) -> dict:
        return {"meta": {"note": "written by the zoo"}, "state_dict": getattr(module, self.inner).state_dict()}

    def load_weights(self, module, path: Path) -> None:
        sd, _meta = checkpoint_state_dict(path)
        load_strict(getattr(module, self.inner), sd, path)

    @property
    def size(self) -> int:
        return int(self.manifest.input["shape"][-1])


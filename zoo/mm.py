"""OpenMMLab glue shared by the models built with mmsegmentation / mmdetection (fcn8s, nasfpn).

The models come from the configs that ship inside the installed package (`<pkg>/.mim/configs`),
built through the package's own registry, with no pretrained-backbone download. Imported only
by those models' adapters: the zoo core does not need OpenMMLab."""
from __future__ import annotations

import importlib
from pathlib import Path

from zoo.errors import ZooError, one_line


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
    from zoo.weights import read_checkpoint, unwrap_state_dict
    obj = read_checkpoint(path)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return unwrap_state_dict(obj, ("module.",)), meta

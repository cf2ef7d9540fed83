"""Model manifests: `models/<name>/model.yaml`, validated by schema/model.schema.json.

Models are discovered by scanning the manifests, never by import side effects."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from zoo.errors import ZooError
from zoo.paths import MODELS_DIR, SCHEMA_DIR


@dataclass
class Manifest:
    name: str
    dir: Path
    raw: dict = field(repr=False)

    def __getattr__(self, key):  # manifest sections as attributes: m.export, m.reference, ...
        raw = self.__dict__.get("raw")  # absent while copy/pickle rebuild the object
        if raw is None or key.startswith("__"):
            raise AttributeError(key)
        try:
            return raw[key]
        except KeyError:
            raise AttributeError(key) from None

    def adapter(self, **options):
        mod_name, cls_name = self.raw["adapter"].split(":")
        cls = getattr(importlib.import_module(mod_name), cls_name)
        return cls(self, **options)


def available_models(models_dir: Path = MODELS_DIR) -> list[str]:
    return sorted(p.parent.name for p in models_dir.glob("*/model.yaml"))


@lru_cache(maxsize=None)
def _validator():
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "model.schema.json").read_text()))


def load_manifest(name: str, models_dir: Path = MODELS_DIR) -> Manifest:
    known = available_models(models_dir)
    if name not in known:  # a name, never a path: only a discovered name becomes a path
        raise ZooError(f"unknown model {name!r} (known: {', '.join(known) or 'none'}; a model is given by its "
                       f"name, not a path)")
    path = models_dir / name / "model.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ZooError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        raise ZooError(f"{path}: invalid manifest at {where}: {e.message}")
    if data["name"] != name:
        raise ZooError(f"{path}: name {data['name']!r} does not match its folder {name!r}")
    return Manifest(name=name, dir=path.parent, raw=data)

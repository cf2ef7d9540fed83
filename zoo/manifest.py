"""Model manifests: `models/<name>/model.yaml`, validated by schema/model.schema.json.

Models are discovered by scanning the manifests, never by import side effects."""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from zoo.errors import ZooError
from zoo.paths import MODELS_DIR, SCHEMA_DIR, model_dirs


@dataclass(frozen=True)
class Manifest:
    """A validated model.yaml (schema/model.schema.json), one field per section."""
    name: str
    dir: Path
    title: str
    task: str                   # recorded in the result (model.task)
    adapter_path: str           # "module:Class" implementing zoo.adapter.ModelAdapter
    upstream: dict
    guide: str | None
    model: dict                 # options (declared) and the state_dict key list
    weights: dict
    input: dict
    output: dict
    export: dict
    verify: dict
    data: dict
    benchmark: dict
    reference: dict
    preprocess: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, name: str, folder: Path, data: dict) -> "Manifest":
        return cls(name=name, dir=folder, title=data["title"], task=data["task"], adapter_path=data["adapter"],
                   upstream=data["upstream"], guide=data.get("guide"), model=data["model"], weights=data["weights"],
                   input=data["input"], output=data["output"], export=data["export"], verify=data["verify"],
                   data=data["data"], benchmark=data["benchmark"], reference=data["reference"],
                   preprocess=data.get("preprocess", {}), postprocess=data.get("postprocess", {}))

    def adapter_class(self):
        mod_name, cls_name = self.adapter_path.split(":")
        if self.dir.parent != MODELS_DIR and str(self.dir.parent) not in sys.path:
            sys.path.append(str(self.dir.parent))  # a ZOO_MODEL_DIRS model: <name>.<module> from its folder
        return getattr(importlib.import_module(mod_name), cls_name)

    def adapter(self, **options):
        return self.adapter_class()(self, **options)


def _discovered(dirs: list[Path] | None = None) -> dict[str, Path]:
    """name -> its model.yaml, over models/ and ZOO_MODEL_DIRS; a name found twice is an error."""
    found: dict[str, Path] = {}
    for folder in dirs or model_dirs():
        for p in sorted(Path(folder).glob("*/model.yaml")):
            name = p.parent.name
            if name in found and found[name] != p:
                raise ZooError(f"{p}: model {name!r} is also defined by {found[name]}")
            found[name] = p
    return found


def available_models(models_dir: Path | None = None) -> list[str]:
    return sorted(_discovered([models_dir] if models_dir else None))


@lru_cache(maxsize=None)
def _validator():
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "model.schema.json").read_text()))


def load_manifest(name: str, models_dir: Path | None = None) -> Manifest:
    found = _discovered([models_dir] if models_dir else None)
    if name not in found:  # a name, never a path: only a discovered name becomes a path
        raise ZooError(f"unknown model {name!r} (known: {', '.join(sorted(found)) or 'none'}; a model is given by "
                       f"its name, not a path)")
    path = found[name]
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
    return Manifest.from_yaml(name, path.parent, data)


def describe_manifest(m: Manifest) -> list[str]:
    """What `python -m zoo models` shows of one model: the manifest's facts, then its options."""
    from zoo.options import describe
    up = m.upstream
    d, inp, out, exp = m.data, m.input, m.output, m.export
    splits = ", ".join(f"{k}" + (f" ({v['expected_samples']})" if v.get("expected_samples") else "")
                       for k, v in d["splits"].items())
    refs = ", ".join(f"{k} {v['metric']} {v['value']}" for k, v in m.reference["protocols"].items())
    lines = [f"{m.name}\t{m.title}",
             f"    task {m.task}; upstream {up['repo']}" + (f" @ {up['commit'][:12]}" if up.get("commit") else "")
             + (f" ({up['licence']})" if up.get("licence") else "") + (f"; guide {m.guide}" if m.guide else ""),
             f"    data: {d['family']} [{d['layout']}]; splits {splits}",
             f"    input {inp['name']} {inp['dtype']} {inp.get('layout', '')} {inp['shape']} -> output {out['name']}"
             + (f" {out['shape']}" if out.get("shape") else "") + (f" ({out['meaning']})" if out.get("meaning") else ""),
             f"    export opset {exp['opset']}" + (f" (the guide's: {exp['guide_opset']})" if exp.get("guide_opset") else "")
             + f"; batch sizes {m.benchmark['batch_sizes']}; references: {refs} (tolerance {m.reference['tolerance']:.0%})"]
    return lines + [f"    --option {line}" for line in describe(m.model["options"])]


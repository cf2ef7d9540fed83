"""Model manifests: `models/<name>/model.yaml`, validated by schema/model.schema.json.

Models are discovered by scanning the manifests (zoo.registry, the one place that does), never by
import side effects."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zoo import registry
from zoo.errors import ZooError
from zoo.paths import MODELS_DIR
from zoo.schema import SchemaError, validate_manifest


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
        """The adapter's class. `models.<name>.<module>` (the zoo's models) is a module of the zoo's
        `models` package; `<name>.<module>` (a ZOO_MODEL_DIRS model: its folder is a package of its
        own, whose modules import each other as `<name>.x`) is imported from the folder's parent,
        wherever that is: its ZOO_MODEL_DIRS folder on the host, the zoo's models/ in its image
        (core.Dockerfile copies it to /opt/zoo/models/<name>/, with the zoo's own)."""
        mod_name, cls_name = self.adapter_path.split(":")
        own_package = mod_name.split(".")[0] == self.name
        if (own_package or self.dir.parent != MODELS_DIR) and str(self.dir.parent) not in sys.path:
            sys.path.append(str(self.dir.parent))
        return getattr(importlib.import_module(mod_name), cls_name)

    def adapter(self, **options):
        return self.adapter_class()(self, **options)


def available_models(models_dir: Path | None = None) -> list[str]:
    """The models of `models_dir`, default models/ and ZOO_MODEL_DIRS (zoo.registry)."""
    return registry.names([models_dir] if models_dir else None)


def load_manifest(name: str, models_dir: Path | None = None) -> Manifest:
    path = registry.find(name, [models_dir] if models_dir else None).manifest  # a name, never a path
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ZooError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    try:
        validate_manifest(data, str(path))  # closed schema: an unknown key is one line naming it
    except SchemaError as exc:
        raise ZooError(str(exc)) from None
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


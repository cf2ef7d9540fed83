"""Stage 3, export: the network to ONNX once per (weights, options, opset, input shape) in the
cache, or a user's --onnx file checked against the manifest; the exported file checked against
PyTorch with a plain ONNX Runtime session (`export.parity`); the adapter's graph edit, if its
options ask for one (a guide's weight patch), with its effect on the outputs; the graph's cost."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo import logs
from zoo.errors import ZooError, one_line
from zoo.onnx_export import apply_edit, check_onnx, ensure_onnx, export_key, onnx_io
from zoo.fileutil import file_digest
from zoo.stages import log
from zoo.stages.verify import compare, tolerance


def first_output(out):
    """The main output of a model that may also return auxiliary outputs (a tuple/list)."""
    return out[0] if isinstance(out, (list, tuple)) else out


def torch_outputs(module, batch: np.ndarray) -> np.ndarray:
    import torch
    with torch.inference_mode():
        return first_output(module(torch.from_numpy(batch))).numpy()


def user_onnx(path: Path, manifest) -> dict:
    """The export block of a user-supplied ONNX file (checked, its inputs/outputs matched)."""
    inp, outp = manifest.input["name"], manifest.output["name"]
    check_onnx(path)
    ins, outs, file_opset = onnx_io(path)
    if ins != [inp] or outs[:1] != [outp]:
        raise ZooError(f"{path}: inputs {ins} / outputs {outs} do not match the manifest's {inp!r} -> {outp!r}")
    return {"format": "onnx", "exporter": "user-supplied file", "opset": file_opset, "input_names": ins,
            "output_names": outs[:1], "dynamic_batch": manifest.export["dynamic_batch"],
            "path": str(Path(path).resolve()), "onnx_sha256": file_digest(path), "cached": False, "seconds": 0.0,
            "checker": "full_check_passed"}


def export_model(cfg, manifest, adapter, module, weights, batch: np.ndarray, metas: list, reference: np.ndarray,
                 cache: Path) -> dict:
    """The export block of the record (schema: export). `batch` is the verify batch (real samples),
    `reference` PyTorch's outputs on it."""
    exp = manifest.export
    inp, outp = manifest.input["name"], manifest.output["name"]
    opset = cfg.opset or exp["opset"]
    if cfg.onnx:
        export = user_onnx(Path(cfg.onnx), manifest)
    else:
        shape = list(batch.shape[1:])  # the graph may be specialised to the exported size (exact pooling)
        key = export_key(weights.sha256, adapter.export_options(), opset, exp["dynamic_batch"],
                         f"{manifest.name}|{shape}")
        meta = {"zoo.model": manifest.name, "zoo.variant": adapter.variant, "zoo.weights_sha256": weights.sha256,
                "zoo.input": inp, "zoo.output": outp, "zoo.input_shape": json.dumps(shape)}
        with logs.progress(f"      exporting to ONNX (opset {opset})"):  # a spinner with the time spent
            export = ensure_onnx(module, batch, cache, key, inp, outp, opset, exp["dynamic_batch"], meta,
                                 dynamic_spatial=adapter.dynamic_spatial)

    import onnxruntime as ort
    import torch

    def ort_out(path):
        try:
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([outp], {inp: batch})[0]
        except Exception as exc:  # e.g. a user-supplied ONNX file for another input size
            raise ZooError(f"{path}: ONNX Runtime cannot run the model on a {list(batch.shape)} batch "
                           f"({one_line(exc)[:300]})") from None

    tol = tolerance(manifest, "fp32")
    with logs.progress("      parity: ONNX Runtime against PyTorch"):
        export["parity"] = {"reference": f"torch {torch.__version__}", "candidate": f"onnxruntime {ort.__version__}",
                            "batch_size": int(batch.shape[0]),
                            **compare(reference, ort_out(export["path"]), adapter, metas, tol)}
    log(f"      parity max_rel_diff={export['parity']['max_rel_diff']:.2e} passed={export['parity']['passed']}")
    edit_key = adapter.export_edit_key()
    if edit_key:
        # A guide's edit of the exported graph (changes numerics): the runtimes use the edited
        # file; its effect on the outputs of the verify batch is recorded next to the parity.
        edited = Path(export["path"]).with_name(f"model.{edit_key}.onnx")
        info = apply_edit(Path(export["path"]), edited, lambda model: adapter.edit_onnx(model, module))
        export["edit"] = {"name": edit_key, **info, "path": str(edited), "onnx_sha256": file_digest(edited),
                          "effect_vs_torch": {"reference": export["parity"]["reference"],
                                              "candidate": f"{export['parity']['candidate']} (edited graph)",
                                              "batch_size": int(batch.shape[0]),
                                              **compare(reference, ort_out(edited), adapter, metas, tol)}}
        export["path"] = str(edited)
        log(f"      edit {edit_key}: {info} -> max_rel_diff vs torch {export['edit']['effect_vs_torch']['max_rel_diff']:.2e}")
    try:  # the model's cost, from the graph the runtimes run
        from zoo.cost import onnx_cost
        with logs.progress("      counting the graph's cost"):
            export["cost"] = {**onnx_cost(Path(export["path"]), list(batch.shape[1:])),
                              "input_shape": list(batch.shape[1:])}
    except ZooError as exc:
        log(f"      cost not counted: {exc}")
    return export


def verify_reference(export: dict, reference: np.ndarray, batch: np.ndarray, manifest) -> tuple[np.ndarray, str | None]:
    """What the runtime under test is verified against: PyTorch's outputs (`reference`; label
    None, verify's own), or, when a guide's edit changed the exported graph, the edited graph's
    outputs from a plain ONNX Runtime session -- the model the runtimes run is the edited one, and
    PyTorch's unedited outputs would fail every runtime by the edit's own effect (recorded apart,
    in export.edit.effect_vs_torch)."""
    edit = export.get("edit")
    if not edit:
        return reference, None
    import onnxruntime as ort
    inp, outp = manifest.input["name"], manifest.output["name"]
    session = ort.InferenceSession(str(export["path"]), providers=["CPUExecutionProvider"])
    label = (f"onnxruntime {ort.__version__} on the edited graph ({edit['name']}: the guide's edit; its effect "
             f"vs torch is export.edit.effect_vs_torch)")
    return session.run([outp], {inp: batch})[0], label


def check_edit_allowed(adapter, runtime_cls, cfg, manifest) -> None:
    """An option that edits the exported graph needs a runtime that runs that graph (a property
    of the runtime: runs_onnx_graph) and no user --onnx file."""
    edit_key = adapter.export_edit_key()
    if edit_key and (not runtime_cls.runs_onnx_graph or cfg.onnx):
        raise ZooError(f"{manifest.name}: the option behind the ONNX edit {edit_key!r} applies to the exported graph "
                       f"only ({cfg.runtime} runs {'a given --onnx file' if cfg.onnx else 'the PyTorch module'}): use a "
                       f"runtime that runs the exported graph (--runtime onnxruntime, openvino, ...) without --onnx, "
                       f"or turn the option off")

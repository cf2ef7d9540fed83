"""Stage 1, weights: the checkpoint resolved (manifest name, file or URL), verified by checksum,
loaded strictly into the adapter's network with the upstream key names."""
from __future__ import annotations

from zoo.checkpoints import Weights, resolve


def load_model(cfg, manifest, adapter) -> tuple[Weights, object]:
    """(the resolved, verified checkpoint; the network in eval mode with its weights)."""
    weights = resolve(cfg.weights, manifest, cfg.sha256, cfg.md5)
    module = adapter.build()
    adapter.load_weights(module, weights.path)
    module.eval()
    return weights, module

"""The run's stages, in order: config, weights, export, compile, verify, infer, score, record."""

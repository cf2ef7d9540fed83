"""zoo: the shared core of the offline-inference model zoo.

Everything every model needs lives here once: checkpoint fetching and strict loading, ONNX
export with parity checks, runtimes behind one interface, the streaming inference pipeline with
latency statistics, metrics, and validated atomic result records. A model directory
(`models/<name>/`) adds only its network, its data reading/preprocessing and its manifest.
"""
__version__ = "0.1.0"
RESULT_SCHEMA_VERSION = "1.11"

"""The errors of the Docker runner (runner/docker.py and its parts): one line each, fit for
``sys.exit(str(err))``.

``UnknownModel`` (no Dockerfile in the model's folder: models/<name>/ or ZOO_MODEL_DIRS), ``DeviceNotFound`` (explicit
``ascend``/``nvidia`` without such a device), ``DockerUnavailable`` (no daemon reachable, or the
SDK missing); ``runner.engine.Interrupted`` (a run stopped by a signal) is one too.
"""
from __future__ import annotations

__all__ = ["DeviceNotFound", "DockerError", "DockerUnavailable", "UnknownModel", "one_line"]


class DockerError(RuntimeError):
    """Base of the Docker runner's errors; the message is always a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class UnknownModel(DockerError):
    """The model has no ``models/<name>/Dockerfile``."""


class DeviceNotFound(DockerError):
    """An explicit ``--device-type`` whose devices are not on this host."""


class DockerUnavailable(DockerError):
    """No Docker daemon reachable (or the Docker SDK is not installed)."""


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (newlines included) and cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

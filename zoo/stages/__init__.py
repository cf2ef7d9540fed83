"""The run's stages, in order: config, weights, export, compile, verify, infer, score, record."""
from zoo import logs


def log(msg: str) -> None:
    """A status line of the run (INFO, zoo.logs: on stderr; stdout carries the result's path)."""
    logs.info(msg)

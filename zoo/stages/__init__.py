"""The run's stages, in order: config, weights, export, compile, verify, infer, score, record."""
import sys


def log(msg: str) -> None:
    """A progress line of the run, on stderr (stdout carries the result's path)."""
    print(msg, file=sys.stderr, flush=True)

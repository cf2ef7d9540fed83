"""The model registry: which models there are and where each one's files are, found in one place.

A model is a folder `<name>/` holding a `model.yaml`, in the zoo's `models/` or in a folder of
ZOO_MODEL_DIRS (os.pathsep-separated: models kept outside the zoo; zoo.paths.model_dirs). A name
found in two folders is an error. Everything that turns a model name into a file asks here:
zoo.manifest (the manifest), runner.envs (requirements, lock, setup.sh: `.venvs/<name>`),
runner.lock (the lock to regenerate), runner.image_store and the image plan (the Dockerfile),
runner.matrix and tasks.py (the names; the model's tests), and CI's model matrix
(`python3 -m invoke models --json`).

A model's own tests: `tests/models/<name>/` (where the zoo's models keep theirs, in the repository's
test tree) and `tests/` inside the model's folder (where a model of ZOO_MODEL_DIRS keeps its own:
they travel with the model); `invoke test --model <name>` runs whichever exist, after tests/core,
in the model's environment.

Nothing here reads a manifest or imports a model: the host runner uses it with the standard
library only. A name is never a path: only a discovered name becomes one (`find`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError, closest
from zoo.paths import MODELS_DIR, ROOT, model_dirs

MANIFEST = "model.yaml"


class UnknownModel(ZooError):
    """A name that is not a discovered model (one line: the known names, a did-you-mean)."""


@dataclass(frozen=True)
class ModelFiles:
    """One discovered model: its name and folder, and the paths of its files (whether or not
    each exists: `requirements.txt`, the lock, `setup.sh` and the Dockerfile are optional here,
    their users say when one is missing)."""
    name: str
    dir: Path

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST

    @property
    def requirements(self) -> Path:
        """The human-edited pins (`requirements.txt`)."""
        return self.dir / "requirements.txt"

    @property
    def lock(self) -> Path:
        """The hash lock its environment and image install (`requirements.lock`)."""
        return self.dir / "requirements.lock"

    @property
    def setup_script(self) -> Path:
        """Compiled dependencies, run by `invoke setup` after the lock (`setup.sh`, optional)."""
        return self.dir / "setup.sh"

    @property
    def dockerfile(self) -> Path:
        """The model's part of its image (`Dockerfile`, optional)."""
        return self.dir / "Dockerfile"

    @property
    def plugged(self) -> bool:
        """Found through ZOO_MODEL_DIRS (kept outside the zoo's models/)."""
        return self.dir.parent != MODELS_DIR

    @property
    def test_dirs(self) -> list[Path]:
        """Its own tests that exist: `tests/models/<name>/` of the repository, `<folder>/tests/`."""
        return [d for d in (ROOT / "tests" / "models" / self.name, self.dir / "tests") if d.is_dir()]


def discover(dirs: list[Path] | None = None) -> dict[str, ModelFiles]:
    """name -> ModelFiles over `dirs` (default: models/ then ZOO_MODEL_DIRS), sorted by name."""
    found: dict[str, ModelFiles] = {}
    for folder in dirs or model_dirs():
        for manifest in sorted(Path(folder).glob(f"*/{MANIFEST}")):
            name = manifest.parent.name
            if name in found and found[name].manifest != manifest:
                raise ZooError(f"{manifest}: model {name!r} is also defined by {found[name].manifest}")
            found[name] = ModelFiles(name, manifest.parent)
    return dict(sorted(found.items()))


def names(dirs: list[Path] | None = None) -> list[str]:
    return list(discover(dirs))


def find(name, dirs: list[Path] | None = None) -> ModelFiles:
    """The model called exactly `name` (a name, never a path: `../models/x` or `/abs/models/x`
    cannot reach the code that turns the name into a path); UnknownModel otherwise."""
    found = discover(dirs)
    if not isinstance(name, str) or name not in found:
        known = list(found)
        raise UnknownModel(f"unknown model {name!r}{did_you_mean(name, known)} (known: {', '.join(known) or 'none'}; "
                           f"a model is given by its name, not a path)")
    return found[name]


def did_you_mean(name, known: list[str]) -> str:
    """': did you mean unetpp?' for the closest known name (difflib; case and a path's folders
    ignored: `UNETPP`, `models/unetp`), else ''."""
    if not isinstance(name, str) or not known:
        return ""
    lower = {k.lower(): k for k in known}
    for word in (name.lower(), Path(name.strip("/") or ".").name.lower()):
        close = closest(word, lower)
        if close:
            return f": did you mean {lower[close]}?"
    return ""

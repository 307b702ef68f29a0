"""Checkpoints: written atomically (temp file, fsync, rename) and read with
``torch.load(weights_only=True)``, so a checkpoint can never run code on load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fovea.errors import UserError

# The process's umask, read once at import (os.umask can only be read by setting it): files written
# atomically get the mode open() would have given them, not mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it over
    ``path``: a reader sees the old file or the new one, never half of one. The file gets the mode
    a plain ``open(path, "wb")`` would give it (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {str(path)!r} refused: it cannot be read with weights_only=True "
                        f"(it needs pickled code, or it is corrupt): {first}") from None

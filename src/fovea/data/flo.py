"""Middlebury ``.flo`` optical-flow files (Baker et al. 2011, "A Database and Evaluation
Methodology for Optical Flow"), the format of the Middlebury, MPI-Sintel and Flying Chairs
ground truth.

Layout, all little-endian:

    bytes 0-3    float32 202021.25, the magic (the ASCII characters "PIEH")
    bytes 4-7    int32 width W
    bytes 8-11   int32 height H
    then         H * W * 2 float32, row by row, u (horizontal, positive to the right) then
                 v (vertical, positive downwards) for each pixel

In fovea a flow field is a float32 tensor of shape (2, H, W): channel 0 is u, channel 1 is v.
Values above 1e9 in magnitude mark unknown flow in the Middlebury files (``UNKNOWN_FLOW``);
they are read as they are.

Every file that is not a well-formed ``.flo`` file (missing, a folder, a wrong magic, a width
or height out of range, fewer or more bytes than the header announces) raises
:class:`FloError`, a :class:`~fovea.errors.UserError` with one line naming the file and what
was expected. Writing is atomic: the data goes to a temp file in the same folder, which then
replaces the target, so an existing file is never left half-written.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch

from fovea.errors import UserError
from fovea.train.checkpoint import atomic_write

__all__ = ["FLO_MAGIC", "MAX_FLO_SIDE", "UNKNOWN_FLOW", "FloError", "read_flo", "write_flo"]

FLO_MAGIC = 202021.25
_MAGIC_BYTES = struct.pack("<f", FLO_MAGIC)  # b"PIEH"
_HEADER = struct.Struct("<fii")
# The Middlebury reference reader rejects sides of 100000 or more as a corrupt header.
MAX_FLO_SIDE = 99_999
# Middlebury marks pixels with no ground truth by |u| or |v| above this.
UNKNOWN_FLOW = 1e9


class FloError(UserError, ValueError):
    """A file that is not a well-formed Middlebury ``.flo`` file, or a flow that cannot be written as one."""


def read_flo(path: str | Path) -> torch.Tensor:
    """Read a Middlebury ``.flo`` file as a float32 tensor of shape (2, H, W) (u, then v)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise FloError(f"flow file {str(path)!r}: {what}, expected a Middlebury .flo file")
    try:
        with path.open("rb") as f:
            # The header first: a large file that is not a .flo is refused without reading it all.
            header = f.read(_HEADER.size)
            size = os.fstat(f.fileno()).st_size
            if len(header) < _HEADER.size:
                raise FloError(f"flow file {str(path)!r}: {len(header)} bytes, expected a {_HEADER.size}-byte "
                               "header (magic 202021.25, int32 width, int32 height)")
            if header[:4] != _MAGIC_BYTES:
                (magic,) = struct.unpack_from("<f", header)
                raise FloError(f"flow file {str(path)!r}: magic {magic!r} (bytes {header[:4]!r}), expected "
                               f"{FLO_MAGIC} ({_MAGIC_BYTES!r}); not a Middlebury .flo file")
            _, width, height = _HEADER.unpack(header)
            if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE):
                raise FloError(f"flow file {str(path)!r}: header says width={width}, height={height}, "
                               f"expected both in 1..{MAX_FLO_SIDE}")
            expected = _HEADER.size + width * height * 2 * 4
            if size != expected:
                problem = "truncated" if size < expected else "trailing data"
                raise FloError(f"flow file {str(path)!r}: {problem}, {size} bytes, expected {expected} "
                               f"for {width}x{height} (12-byte header + W*H*2 float32)")
            data = f.read()
    except OSError as e:
        raise FloError(f"flow file {str(path)!r}: cannot be read ({e.strerror or e})") from None
    if len(data) != expected - _HEADER.size:  # the file changed while it was read
        raise FloError(f"flow file {str(path)!r}: truncated, expected {expected} bytes for {width}x{height}")
    hw2 = np.frombuffer(data, dtype="<f4").reshape(height, width, 2)
    return torch.from_numpy(np.ascontiguousarray(hw2.transpose(2, 0, 1), dtype=np.float32))


def write_flo(path: str | Path, flow: torch.Tensor | np.ndarray) -> Path:
    """Write a (2, H, W) flow field (u, then v) as a Middlebury ``.flo`` file, atomically."""
    arr = flow.detach().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise FloError(f"Received a flow of shape {tuple(arr.shape)} for {str(path)!r}, expected (2, H, W).")
    height, width = arr.shape[1:]
    if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE):
        raise FloError(f"Received a flow of {width}x{height} for {str(path)!r}, "
                       f"expected both sides in 1..{MAX_FLO_SIDE}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FloError(f"Received a flow of dtype {arr.dtype} for {str(path)!r}, expected real numbers.")
    body = np.ascontiguousarray(arr.transpose(1, 2, 0), dtype="<f4").tobytes()
    header = _HEADER.pack(FLO_MAGIC, width, height)
    path = Path(path)
    if path.is_dir():
        raise FloError(f"flow file {str(path)!r} is a folder, expected a file path")
    return atomic_write(path, lambda f: (f.write(header), f.write(body)))

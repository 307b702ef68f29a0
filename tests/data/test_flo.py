"""Middlebury .flo files: round trip, the exact bytes of the format, malformed files, atomic writes."""

import struct

import numpy as np
import pytest
import torch

from fovea.data.flo import FLO_MAGIC, read_flo, write_flo
from fovea.errors import UserError


def _hand_built(width: int, height: int, hw2: np.ndarray) -> bytes:
    """The format as the Middlebury reference writes it, built field by field."""
    return struct.pack("<f", 202021.25) + struct.pack("<i", width) + struct.pack("<i", height) + \
        hw2.astype("<f4").tobytes()


def test_round_trip_keeps_every_value(tmp_path):
    flow = torch.randn(2, 5, 7) * 30
    flow[0, 1, 2] = 1e10  # Middlebury's unknown-flow marker survives too
    path = write_flo(tmp_path / "a.flo", flow)
    back = read_flo(path)
    assert back.dtype == torch.float32 and back.shape == (2, 5, 7)
    assert torch.equal(back, flow)
    write_flo(tmp_path / "b.flo", flow.numpy().astype(np.float64))  # numpy input, cast to float32
    assert torch.equal(read_flo(tmp_path / "b.flo"), flow)


def test_written_bytes_match_the_format(tmp_path):
    h, w = 3, 4
    ys, xs = np.mgrid[0:h, 0:w]
    u, v = xs + 10.0 * ys + 0.5, -(xs * 0.25) - ys  # distinct values: any transposition would show
    write_flo(tmp_path / "f.flo", torch.tensor(np.stack([u, v]), dtype=torch.float32))
    data = (tmp_path / "f.flo").read_bytes()
    assert data[:4] == b"PIEH" and struct.unpack("<f", data[:4])[0] == FLO_MAGIC
    assert data == _hand_built(w, h, np.stack([u, v], -1))  # row-major, u and v interleaved per pixel


def test_reads_a_hand_built_file(tmp_path):
    h, w = 2, 3
    hw2 = np.arange(h * w * 2, dtype=np.float32).reshape(h, w, 2)
    (tmp_path / "h.flo").write_bytes(_hand_built(w, h, hw2))
    flow = read_flo(tmp_path / "h.flo")
    assert flow.shape == (2, h, w)
    assert flow[0, 1, 2] == hw2[1, 2, 0] == 10 and flow[1, 1, 2] == hw2[1, 2, 1] == 11
    np.testing.assert_array_equal(flow.numpy(), hw2.transpose(2, 0, 1))


GOOD = _hand_built(3, 2, np.zeros((2, 3, 2), np.float32))


@pytest.mark.parametrize("content, expected", [
    (b"", "12-byte header"),
    (GOOD[:9], "12-byte header"),
    (b"PIEF" + GOOD[4:], "magic"),
    (struct.pack("<f", 202021.0) + GOOD[4:], "magic"),
    (GOOD[:-1], "truncated"),
    (GOOD[:20], "truncated"),
    (GOOD + b"\0\0\0\0", "trailing data"),
    (struct.pack("<fii", 202021.25, 0, 2), "width=0"),
    (struct.pack("<fii", 202021.25, 3, -2), "height=-2"),
    (struct.pack("<fii", 202021.25, 10**6, 10**6), "1..99999"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not a Middlebury"),
])
def test_malformed_files_raise_one_line_user_errors(tmp_path, content, expected):
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_flo(path)
    msg = str(info.value)
    assert expected in msg and "bad.flo" in msg and "\n" not in msg


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_not_a_file_is_a_user_error(tmp_path, kind):
    path = tmp_path / "x.flo"
    if kind == "folder":
        path.mkdir()
    with pytest.raises(UserError, match="x.flo") as info:
        read_flo(path)
    assert ("folder" if kind == "folder" else "not found") in str(info.value)


@pytest.mark.parametrize("shape", [(3, 4, 4), (4, 4), (1, 2, 4, 4), (2, 0, 4)])
def test_writing_a_bad_shape_is_refused(tmp_path, shape):
    with pytest.raises(UserError):
        write_flo(tmp_path / "o.flo", torch.zeros(shape))
    assert not (tmp_path / "o.flo").exists()


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = write_flo(tmp_path / "keep.flo", torch.ones(2, 4, 4))
    before = path.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr("fovea.train.checkpoint.os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_flo(path, torch.zeros(2, 64, 64))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.flo"]  # no temp file left behind
    write_flo(path, torch.zeros(2, 8, 8))  # a later write replaces it
    assert read_flo(path).shape == (2, 8, 8)

"""Video data: the synthetic ``moving-shapes`` action set, video files and frame folders, clip
sampling and the cached optical flow of the two-stream network's temporal stream.

Conventions: a video is a uint8 tensor ``(C, T, H, W)`` of RGB frames, a batch of videos
``(N, C, T, H, W)``; :class:`~fovea.data.sources.Split` ``images`` holds ``(N, 3, V, H, W)``
(V frames kept per video) and ``labels`` int64 ``(N,)``.

``moving-shapes``: one shape (a triangle, a 2:1 rectangle or an L) on a static, low-contrast
textured background (a crop of one of the photos of :func:`fovea.data.chairs.texture_atlas`).
The class is the motion alone (:data:`MOVING_SHAPES_CLASSES`): a constant velocity to the left,
right, up or down; a rotation clockwise or counter-clockwise (as seen on screen); growth or
shrinkage; or bouncing back and forth along a random axis. Everything a single frame shows has
the same distribution in every class, for a frame drawn uniformly from the video:

- the position is uniform on a torus (the shape is drawn wrapped around the frame's edges), so
  it stays uniform under any translation;
- the angle is uniform in [0, 2 pi) and stays uniform under any rotation;
- the log-size at frame t is L0 + g (t - c) for ``grow``, L0 - g (t - c) for ``shrink`` (c the
  middle index, g = log(2) / (T - 1): a factor 2 over the video), and the constant L0 + g (u - c)
  for every other class, u a uniformly drawn frame index: the same mixture as the growing
  classes' size at a uniformly drawn frame;
- shape, colours, texture and background are drawn independently of the class.

At one fixed frame (the middle one, say) the sizes differ slightly: there a growing shape's
log-size is uniform over [a, b] while the other classes' spreads over [a - g c, b + g c], so a
size outside [a, b] rules out ``grow`` and ``shrink``. The Bayes-optimal classifier of the
shape's exact size at the middle frame of a 24-frame video is right 13.9% of the time (16% at
frame 8 or 16), against 11.1% for chance; nothing else in a frame carries information. (No
growth at a constant rate can have the same size distribution at every frame; this design makes
the uniformly drawn frame exact.)

Flow (two-stream): the flow of frame t to t + 1 is stored at index t, quantized to uint8 with
:data:`FLOW_BOUND` (Simonyan and Zisserman 2014 rescale flow to [0, 255] and store it as JPEG;
here it is one uint8 tensor), computed once by OpenCV's Farneback or DIS
(:mod:`fovea.apps.flow_baselines`) and cached by a hash of the videos.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = [
    "BadVideoError", "FLOW_BOUND", "MOVING_SHAPES_CLASSES", "VIDEO_EXTENSIONS", "clip_starts", "dequantize_flow",
    "load_video_data", "load_video_folder", "make_moving_shapes", "moving_shapes_splits",
    "parse_moving_shapes_spec", "quantize_flow", "read_video", "take_clips", "video_flows", "write_video",
]

MOVING_SHAPES_CLASSES = ("left", "right", "up", "down", "rotate-cw", "rotate-ccw", "grow", "shrink", "bounce")
SHAPES = ("triangle", "rectangle", "L")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FLOW_BOUND = 16.0  # pixels: flow in [-B, B] maps to [0, 255]; larger motions are clipped
CLIP_MODES = ("uniform", "random", "dense")

# moving-shapes motion and size, in pixels at size 32 (scaled with the size)
SPEED = (1.0, 2.0)  # px/frame: left, right, up, down and bounce
ROTATION = (6.0, 12.0)  # degrees/frame
GROWTH = 2.0  # grow / shrink: the size's factor over the whole video
BOUNCE_PERIOD = (6.0, 10.0)  # frames: every window of 16 frames holds at least one reversal
RADIUS = (0.1, 0.22)  # the shape's radius at the middle frame, as a fraction of the side
MIN_SIZE = 16
_CHUNK = 128  # videos rendered at once
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_DEFAULT_TEST_FRACTION = 0.2  # of a folder without split subfolders, as fovea.data.sources does


class BadVideoError(UserError):
    """A video that cannot be used; the message names the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"video {self.path!r} {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


# ---------------------------------------------------------------------------------------------
# moving-shapes


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _triangle_wave(x: Tensor) -> Tensor:
    """Period 1, range [-1, 1], slope +-4."""
    return 2 * (2 * (x - torch.floor(x + 0.5))).abs() - 1


def _box(u: Tensor, v: Tensor, cu: float, cv: float, hu: float, hv: float, r: Tensor) -> Tensor:
    """Signed distance (exact inside, a lower bound outside) to an axis-aligned box, units of r."""
    return torch.maximum((u - cu * r).abs() - hu * r, (v - cv * r).abs() - hv * r)


def _signed_distance(shape: int, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Signed distance in pixels from points (u, v) of the shape's own frame to its outline,
    negative inside. None of the shapes is mapped onto itself by a rotation of less than 180
    degrees, so their rotation shows."""
    if shape == 0:  # isosceles triangle: apex (r, 0), base corners (-0.7 r, +-0.75 r)
        k = math.hypot(0.75, 1.7)
        side = (0.75 * (u - r)) / k
        return torch.maximum(torch.maximum(-0.7 * r - u, side + (1.7 / k) * v), side - (1.7 / k) * v)
    if shape == 1:  # rectangle 2r x r
        return _box(u, v, 0.0, 0.0, 1.0, 0.5, r)
    # an L: a vertical bar on the left joined to a horizontal bar at the bottom
    return torch.minimum(_box(u, v, -0.65, 0.0, 0.35, 1.0, r), _box(u, v, 0.0, 0.65, 1.0, 0.35, r))


def _backgrounds(n: int, size: int, gen: torch.Generator) -> Tensor:
    """(n, 3, size, size) float backgrounds in [0, 1]: a random crop of a photo of the texture
    atlas, grey, at low contrast about a random mean colour."""
    from fovea.data.chairs import TILE, texture_atlas

    atlas, _ = texture_atlas()
    n_tiles = atlas.shape[-1] // TILE
    tile = torch.randint(n_tiles, (n,), generator=gen)
    hi = min(3.0, (TILE - 1) / max(size - 1, 1))  # atlas pixels per frame pixel; the crop stays in its tile
    zoom = _uniform(gen, (n,), min(1.0, hi), hi)
    span = zoom * (size - 1)
    ox = tile * TILE + torch.rand(n, generator=gen) * (TILE - 1 - span)
    oy = torch.rand(n, generator=gen) * (TILE - 1 - span)
    steps = torch.arange(size, dtype=torch.float32)
    x = ox[:, None] + zoom[:, None] * steps  # (n, size)
    y = oy[:, None] + zoom[:, None] * steps
    ha, wa = atlas.shape[-2:]
    grid = torch.stack([(x * (2 / (wa - 1)) - 1)[:, None, :].expand(n, size, size),
                        (y * (2 / (ha - 1)) - 1)[:, :, None].expand(n, size, size)], -1)
    tex = F.grid_sample(atlas, grid.reshape(1, n * size, size, 2), mode="bilinear", align_corners=True)[0]
    grey = (0.299 * tex[0] + 0.587 * tex[1] + 0.114 * tex[2]).reshape(n, 1, size, size)
    grey = grey - grey.mean((2, 3), keepdim=True)
    mean = _uniform(gen, (n, 3, 1, 1), 0.25, 0.75)
    contrast = _uniform(gen, (n, 1, 1, 1), 0.25, 0.5)
    return (mean + contrast * grey).clamp(0, 1)


def _object_colours(background: Tensor, gen: torch.Generator) -> Tensor:
    """(n, 3) colours whose luma differs from the background's mean luma by 0.3 to 0.5 (grey
    optical flow sees the shape), towards the side with more room, with a random tint."""
    n = background.shape[0]
    weights = torch.tensor([0.299, 0.587, 0.114])
    bg_luma = background.mean((2, 3)) @ weights
    step = _uniform(gen, (n,), 0.3, 0.5)
    luma = torch.where(bg_luma < 0.5, bg_luma + step, bg_luma - step)
    tint = _uniform(gen, (n, 3), -0.15, 0.15)
    return (luma[:, None] + tint - (tint @ weights)[:, None]).clamp(0, 1)


def make_moving_shapes(n_per_class: int, frames: int = 24, size: int = 32, seed: int = 0,
                       return_masks: bool = False):
    """``n_per_class`` videos of each class of :data:`MOVING_SHAPES_CLASSES`, the same for the
    same arguments: ``(videos, labels)``, videos uint8 ``(N, 3, frames, size, size)``, labels
    int64 ``(N,)`` with the classes interleaved (label i % 9 for video i). With ``return_masks``
    also the shape's coverage ``(N, frames, size, size)`` float32 in [0, 1] (anti-aliased).

    Motions at ``size`` 32 (scaled by size / 32): left/right/up/down 1 to 2 px/frame; rotations
    6 to 12 degrees/frame; grow/shrink by a factor 2 over the video; bounce 1 to 2 px/frame along
    a random axis (horizontal or vertical), reversing every 3 to 5 frames (a triangle wave of
    period 6 to 10 frames, random phase). The module docstring says why one frame tells nothing.
    """
    for name, value, low in (("n_per_class", n_per_class, 1), ("frames", frames, 2), ("size", size, MIN_SIZE)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"Received {name}={value!r}; expected an integer >= {low}.")
    k = len(MOVING_SHAPES_CLASSES)
    n, T, S = n_per_class * k, frames, size
    labels = torch.arange(n) % k
    gen = torch.Generator().manual_seed(int(seed))
    scale = S / 32
    c = (T - 1) / 2
    t = torch.arange(T, dtype=torch.float32)[None] - c  # (1, T), centred frame index

    # every parameter is drawn for every video, whatever its class
    p0 = torch.rand(n, 2, generator=gen) * S
    theta0 = torch.rand(n, generator=gen) * (2 * math.pi)
    shape = torch.randint(len(SHAPES), (n,), generator=gen)
    log_r0 = _uniform(gen, (n,), math.log(RADIUS[0] * S), math.log(RADIUS[1] * S))
    u = torch.randint(T, (n,), generator=gen).float() - c  # static classes' "virtual frame" of their size
    speed = _uniform(gen, (n,), *SPEED) * scale
    omega = torch.deg2rad(_uniform(gen, (n,), *ROTATION))
    axis = torch.randint(2, (n,), generator=gen)
    period = _uniform(gen, (n,), *BOUNCE_PERIOD)
    phase = torch.rand(n, generator=gen)
    stripes = _uniform(gen, (n,), 0.4, 1.0)  # the shape's own texture: a faint grating, in cycles per radius
    stripe_angle = torch.rand(n, generator=gen) * (2 * math.pi)
    stripe_phase = torch.rand(n, generator=gen) * (2 * math.pi)
    background = _backgrounds(n, S, gen)
    colour = _object_colours(background, gen)

    g = math.log(GROWTH) / (T - 1)
    cls = {name: (labels == i)[:, None] for i, name in enumerate(MOVING_SHAPES_CLASSES)}
    direction = torch.zeros(n, 2)
    for name, d in (("left", (-1, 0)), ("right", (1, 0)), ("up", (0, -1)), ("down", (0, 1))):
        direction[cls[name][:, 0]] = torch.tensor(d, dtype=torch.float32)
    pos = p0[:, None] + direction[:, None] * (speed[:, None, None] * t[..., None])  # (n, T, 2)
    bounce = (speed * period / 4)[:, None] * _triangle_wave(t / period[:, None] + phase[:, None])
    along = F.one_hot(axis, 2).float()
    pos = torch.where(cls["bounce"][..., None], p0[:, None] + bounce[..., None] * along[:, None], pos)
    spin = torch.where(cls["rotate-cw"], 1.0, torch.where(cls["rotate-ccw"], -1.0, 0.0))
    theta = theta0[:, None] + spin * omega[:, None] * t  # increasing angle: clockwise on screen (y down)
    grow = torch.where(cls["grow"], 1.0, torch.where(cls["shrink"], -1.0, 0.0))
    static = ~(cls["grow"] | cls["shrink"])
    log_r = log_r0[:, None] + g * torch.where(static, u[:, None].expand(n, T), grow * t)
    radius = log_r.exp()

    videos = torch.empty(n, 3, T, S, S, dtype=torch.uint8)
    masks = torch.empty(n, T, S, S) if return_masks else None
    coords = torch.arange(S, dtype=torch.float32)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(n, lo + _CHUNK))
        m = sl.stop - sl.start
        # offsets to the shape's centre on the torus, in [-S/2, S/2)
        dx = torch.remainder(coords - pos[sl, :, None, 0] + S / 2, S) - S / 2  # (m, T, S) along x
        dy = torch.remainder(coords - pos[sl, :, None, 1] + S / 2, S) - S / 2
        cos, sin = theta[sl].cos()[..., None, None], theta[sl].sin()[..., None, None]
        dx, dy = dx[:, :, None, :], dy[:, :, :, None]
        uu, vv = dx * cos + dy * sin, dy * cos - dx * sin  # (m, T, S, S) in the shape's frame
        r = radius[sl][..., None, None]
        sd = torch.empty(m, T, S, S)
        for s in range(len(SHAPES)):
            idx = torch.nonzero(shape[sl] == s).flatten()
            if len(idx):
                sd[idx] = _signed_distance(s, uu[idx], vv[idx], r[idx])
        alpha = (0.5 - sd).clamp_(0, 1)  # pixel coverage, from the distance to the outline
        if masks is not None:
            masks[sl] = alpha
        wave_dir = stripe_angle[sl]
        wave = (uu * wave_dir.cos()[:, None, None, None] + vv * wave_dir.sin()[:, None, None, None]) / r
        shade = 1 + 0.12 * torch.sin(wave * (2 * math.pi * stripes[sl])[:, None, None, None]
                                     + stripe_phase[sl][:, None, None, None])
        fg = colour[sl][:, :, None, None, None] * shade[:, None]  # (m, 3, T, S, S)
        a = alpha[:, None]
        frame = background[sl][:, :, None] * (1 - a) + fg * a
        videos[sl] = frame.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    if return_masks:
        return videos, labels, masks
    return videos, labels


def moving_shapes_splits(train: int = 200, val: int = 20, test: int = 50, frames: int = 24, size: int = 32,
                         seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Train, val and test sets (counts per class) from distinct seeds (3 seed, 3 seed + 1,
    3 seed + 2): the test set depends only on ``seed``, ``test``, ``frames`` and ``size``.
    Splits of size 0 are left out."""
    counts = {"train": train, "val": val, "test": test}
    return {name: make_moving_shapes(count, frames=frames, size=size, seed=3 * int(seed) + i)
            for i, (name, count) in enumerate(counts.items()) if count}


MOVING_SHAPES_KEYS = ("n", "val", "test", "frames", "size", "seed")


def parse_moving_shapes_spec(spec: str, image_size: int | None = None) -> dict:
    """``moving-shapes`` or ``moving-shapes:KEY=VALUE,...`` with integer keys n (training videos
    per class, default 200), val (default max(1, n // 10)), test (default max(3, n // 4)), frames
    (24), size (32) and seed (0). ``image_size`` (the ``--image-size`` flag) sets the size when
    the spec gives none."""
    name, _, rest = spec.partition(":")
    if name != "moving-shapes":
        raise UserError(f"Received data {spec!r}; expected moving-shapes[:KEY=VALUE,...].")
    opts: dict = dict(n=200, val=None, test=None, frames=24, size=image_size or 32, seed=0)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = (x.strip() for x in item.partition("="))
        if not eq or key not in MOVING_SHAPES_KEYS:
            raise UserError(f"--data {spec!r}: {item!r} is not KEY=VALUE with KEY one of "
                            f"{', '.join(MOVING_SHAPES_KEYS)}; e.g. moving-shapes:n=200,frames=24,size=32")
        try:
            opts[key] = int(value)
        except ValueError:
            raise UserError(f"--data {spec!r}: {key}={value!r}, expected an integer") from None
    if opts["val"] is None:
        opts["val"] = max(1, opts["n"] // 10)
    if opts["test"] is None:
        opts["test"] = max(3, opts["n"] // 4)
    for key, low in (("n", 1), ("val", 0), ("test", 0), ("frames", 2), ("size", MIN_SIZE), ("seed", 0)):
        if opts[key] < low:
            raise UserError(f"--data {spec!r}: {key}={opts[key]}, expected an integer >= {low}")
    return opts


# ---------------------------------------------------------------------------------------------
# Video files and frame folders


def _natural_key(name: str):
    """frame2 before frame10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


def _square(size) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in hw):
        raise UserError(f"Received size={size!r}; expected a positive integer or (height, width).")
    return hw


def _resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 to ``size`` (H, W): area averaging when shrinking, else bilinear."""
    import cv2

    if size is None or frame.shape[:2] == tuple(size):
        return frame
    shrink = size[0] <= frame.shape[0] and size[1] <= frame.shape[1]
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _frame_files(folder: Path) -> list[Path]:
    from fovea.data.decode import IMAGE_EXTENSIONS

    files = [f for f in folder.iterdir()
             if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")]
    return sorted(files, key=lambda f: _natural_key(f.name))


def _read_frame_folder(folder: Path, size) -> np.ndarray:
    from fovea.data.decode import IMAGE_EXTENSIONS, decode_array, probe_image

    files = _frame_files(folder)
    if not files:
        raise BadVideoError(folder, f"is a folder without frames; expected image files ({', '.join(IMAGE_EXTENSIONS)})"
                                    " named in frame order")
    first, _ = probe_image(files[0])
    for f in files[1:]:
        hw, _ = probe_image(f)
        if hw != first:
            raise BadVideoError(folder, f"has frames of different sizes: {f.name!r} is {hw[0]}x{hw[1]} but "
                                        f"{files[0].name!r} is {first[0]}x{first[1]}; expected one size")
    return np.stack([_resize_frame(decode_array(f, channels=3).transpose(1, 2, 0), size) for f in files])


@contextlib.contextmanager
def _silent_stderr():
    """Mute file descriptor 2: FFmpeg writes its own complaints ("moov atom not found") there,
    and a bad file should end in one line from us."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to mute
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_capture(path: Path):
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with _silent_stderr():
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap = cv2.VideoCapture(str(path))
    finally:
        cv2.utils.logging.setLogLevel(previous)
    return cap


def _read_video_file(path: Path, size) -> np.ndarray:
    import cv2

    expected = ("expected a video OpenCV can decode (" + ", ".join(e[1:] for e in VIDEO_EXTENSIONS)
                + ") or a folder of frames")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise BadVideoError(path, f"has an unknown extension {path.suffix!r}; {expected}")
    cap = _open_capture(path)
    frames = []
    try:
        while cap.isOpened():
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            else:
                frame = cv2.cvtColor(frame[..., :3], cv2.COLOR_BGR2RGB)
            frame = _resize_frame(frame, size)
            if frames and frame.shape != frames[0].shape:
                raise BadVideoError(path, f"changes frame size at frame {len(frames)} "
                                          f"({frames[0].shape[0]}x{frames[0].shape[1]} to "
                                          f"{frame.shape[0]}x{frame.shape[1]}); pass a size to resize its frames")
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise BadVideoError(path, f"has no readable frames; {expected}")
    return np.stack(frames)


def read_video(path: str | Path, size: int | tuple[int, int] | None = None) -> Tensor:
    """A video file (decoded by OpenCV; :data:`VIDEO_EXTENSIONS`) or a folder of frame images
    (sorted by name, numbers in names compared as numbers) as a uint8 ``(3, T, H, W)`` RGB tensor.

    ``size``: resize every frame to size x size (or (H, W)): area averaging when shrinking,
    bilinear otherwise. A missing path, a file with no decodable frame and a frame folder whose
    frames differ in size raise :class:`BadVideoError` (a :class:`~fovea.errors.UserError`).
    """
    path = Path(path)
    hw = _square(size)
    if not path.exists():
        raise BadVideoError(path, "not found; expected a video file or a folder of frames")
    try:
        array = _read_frame_folder(path, hw) if path.is_dir() else _read_video_file(path, hw)
    except PermissionError as exc:
        raise BadVideoError(path, f"cannot be read ({exc.strerror})") from None
    return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 0, 1, 2)))


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def write_video(path: str | Path, video: Tensor, fps: float = 25) -> Path:
    """Write a uint8 ``(3, T, H, W)`` (or ``(1, T, H, W)``) video with OpenCV: MPEG-4 part 2
    (``mp4v``) for .mp4, .m4v and .mov, Motion JPEG for .avi and .mkv. Written to a temporary
    file in the same folder and renamed, so an existing file is never left half-written."""
    import cv2

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _FOURCC:
        raise UserError(f"Received {str(path)!r}; expected a video file name ending in {', '.join(_FOURCC)}.")
    if not isinstance(video, Tensor) or video.dtype != torch.uint8 or video.ndim != 4 or video.shape[0] not in (1, 3):
        what = f"{tuple(video.shape)} {video.dtype}" if isinstance(video, Tensor) else type(video).__name__
        raise UserError(f"Received a video of {what}; expected a uint8 tensor (3, T, H, W).")
    c, t, h, w = video.shape
    if t < 1 or h < 1 or w < 1:
        raise UserError(f"Received a video of shape {tuple(video.shape)}; expected at least one frame of 1x1.")
    if not fps > 0:
        raise UserError(f"Received fps={fps!r}; expected a positive number.")
    frames = video.expand(3, -1, -1, -1).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3) RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*_FOURCC[ext]), float(fps), (w, h), True)
        if not writer.isOpened():
            raise UserError(f"cannot write {str(path)!r}: this OpenCV has no {_FOURCC[ext]} encoder for {ext}")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV takes BGR
        finally:
            writer.release()
        if os.path.getsize(tmp) == 0:
            raise UserError(f"cannot write {str(path)!r}: OpenCV wrote an empty file")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# Folders of videos, one subfolder per class


def _is_video(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    return (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or (p.is_dir() and bool(_frame_files(p)))


def _scan_classes(folder: Path, skipped: list) -> list[tuple[Path, str]]:
    entries = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = sorted((p for p in class_dir.iterdir() if _is_video(p)), key=lambda p: _natural_key(p.name))
        if not videos:
            skipped.append((str(class_dir), "empty class folder"))
        entries.extend((v, class_dir.name) for v in videos)
    return entries


def load_video_folder(folder: str | Path, size: int = 112, frames: int | None = 32, clip: int = 16,
                      val_fraction: float = 0.1, seed: int = 0, on_bad: str = "skip"):
    """Videos in ``FOLDER/CLASS/VIDEO`` (a video file or a folder of frames), or in
    ``FOLDER/{train,val,test}/CLASS/VIDEO``, as a :class:`~fovea.data.sources.DataBundle`.

    Frames are resized to ``size`` x ``size``. Every video keeps its middle V frames, V =
    min(``frames``, the shortest video's length) (``frames=None``: the shortest length). A video
    shorter than ``clip`` frames, or unreadable, is recorded in ``DataBundle.skipped`` with the
    reason (``on_bad="skip"``) or refused (``"fail"``). Without a val (test) folder,
    ``val_fraction`` (a fifth) of the training videos are set aside, stratified by class.
    """
    from fovea.data.sources import DataBundle, Split, _drop_empty_classes, _sorted_classes, _subset, stratified_split

    if on_bad not in ("skip", "fail"):
        raise UserError(f"Received on_bad={on_bad!r}; expected 'skip' or 'fail'.")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"Received val_fraction={val_fraction!r}; expected a number in [0, 1).")
    if frames is not None and frames < 1 or clip < 1:
        raise UserError(f"Received frames={frames!r}, clip={clip!r}; expected positive numbers of frames.")
    folder = Path(folder)
    hw = _square(size)
    if not folder.is_dir():
        raise UserError(f"{str(folder)!r} is not a folder; expected one subfolder per class of videos")
    skipped: list[tuple[str, str]] = []
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    if "train" in children:
        entries = {split: _scan_classes(sub, skipped) for split, names in _SPLIT_DIRS.items()
                   for sub in [next((children[n] for n in names if n in children), None)] if sub is not None}
        class_root = children["train"]
    else:
        entries, class_root = {"train": _scan_classes(folder, skipped)}, folder
    if not any(entries.values()):
        raise UserError(f"no videos found in {str(folder)!r}: expected one subfolder per class holding video files "
                        f"({', '.join(VIDEO_EXTENSIONS)}) or folders of frames")
    decoded: dict[str, list[tuple[np.ndarray, str, str]]] = {}
    for split, items in entries.items():
        decoded[split] = []
        for path, label in items:
            try:
                array = read_video(path, hw).numpy()
                if array.shape[1] < clip:
                    raise BadVideoError(path, f"has {array.shape[1]} frames, fewer than the clip of {clip}; "
                                              f"expected at least {clip} frames")
            except UserError as exc:
                if on_bad == "fail":
                    raise
                skipped.append((str(path), exc.reason if isinstance(exc, BadVideoError) else str(exc)))
                continue
            decoded[split].append((array, str(path), label))
    if not decoded["train"]:
        reason = f"; e.g. {skipped[-1][0]}: {skipped[-1][1]}" if skipped else ""
        raise UserError(f"no usable training video in {str(folder)!r}{reason}")
    length = min(a.shape[1] for items in decoded.values() for a, _, _ in items)
    keep = min(frames, length) if frames is not None else length
    classes = _sorted_classes({label for items in decoded.values() for _, _, label in items})
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    for split, items in decoded.items():
        if not items:
            continue
        start = [(a.shape[1] - keep) // 2 for a, _, _ in items]
        videos = torch.from_numpy(np.stack([a[:, s:s + keep] for (a, _, _), s in zip(items, start)]))
        labels = torch.tensor([index[label] for _, _, label in items], dtype=torch.int64)
        splits[split] = Split(videos, labels, [p for _, p, _ in items])

    def carve(name: str, fraction: float):
        train = splits["train"]
        rest, take = stratified_split(train.labels.numpy(), fraction, seed)
        if len(take):
            splits["train"], splits[name] = _subset(train, rest), _subset(train, take)

    if "test" not in splits and len(entries) == 1:
        carve("test", _DEFAULT_TEST_FRACTION)
    if "val" not in splits and val_fraction > 0:
        carve("val", val_fraction)
    classes = _drop_empty_classes(splits, classes, skipped, class_root)
    return DataBundle(name=folder.resolve().name, train=splits["train"], val=splits.get("val"),
                      test=splits.get("test"), classes=classes, in_channels=3, image_size=hw, skipped=skipped)


def load_video_data(spec: str, root: str | Path | None = None, image_size: int | None = None,
                    frames: int | None = None, clip: int = 16, val_fraction: float = 0.1, seed: int = 0):
    """``moving-shapes[:KEY=VALUE,...]`` (generated; size from the spec, else ``image_size``,
    else 32; frames from the spec, else ``frames``, else 24) or a folder of videos
    (:func:`load_video_folder`; ``image_size`` default 112, ``frames`` default 32), looked up
    as given and then under ``root``."""
    from fovea.data.sources import DataBundle, Split

    spec = str(spec)
    if spec == "moving-shapes" or spec.startswith("moving-shapes:"):
        o = parse_moving_shapes_spec(spec, image_size)
        if frames is not None and "frames=" not in spec:
            o["frames"] = frames
        if o["frames"] < clip:
            raise UserError(f"--data {spec!r}: frames={o['frames']} is shorter than the clip of {clip} frames; "
                            f"expected frames >= {clip}")
        splits = moving_shapes_splits(o["n"], o["val"], o["test"], frames=o["frames"], size=o["size"], seed=o["seed"])
        as_split = lambda s: Split(images=s[0], labels=s[1]) if s is not None else None  # noqa: E731
        return DataBundle(name=spec, train=as_split(splits["train"]), val=as_split(splits.get("val")),
                          test=as_split(splits.get("test")), classes=list(MOVING_SHAPES_CLASSES), in_channels=3,
                          image_size=(o["size"], o["size"]))
    folder = Path(spec).expanduser()
    if not folder.exists() and root is not None:
        folder = Path(root).expanduser() / spec
    if not folder.is_dir():
        raise UserError(f"--data {spec!r}: not moving-shapes[:n=200,frames=24,size=32,...] and not a folder of "
                        "videos (one subfolder per class of video files or frame folders)")
    return load_video_folder(folder, size=image_size or 112, frames=frames if frames is not None else 32, clip=clip,
                             val_fraction=val_fraction, seed=seed)


# ---------------------------------------------------------------------------------------------
# Clips


def clip_starts(num_frames: int, clip: int, mode: str = "uniform", n: int = 1,
                generator: torch.Generator | None = None) -> Tensor:
    """First frames of clips of ``clip`` frames in a video of ``num_frames``, as a LongTensor.

    ``uniform``: ``n`` evenly spaced starts from the first to the last possible one (one clip:
    the middle one); ``random``: ``n`` starts drawn uniformly; ``dense`` (evaluation, as C3D
    and two-stream average over clips): every ``clip // 2`` frames from 0, plus the last start
    so that the end is covered (``n`` is ignored).
    """
    if mode not in CLIP_MODES:
        raise UserError(f"Received clip sampling {mode!r}; expected one of {', '.join(CLIP_MODES)}.")
    if clip < 1 or n < 1:
        raise UserError(f"Received clip={clip}, n={n}; expected positive integers.")
    if clip > num_frames:
        raise UserError(f"a clip of {clip} frames does not fit in a video of {num_frames} frames; "
                        f"expected clip <= {num_frames}")
    last = num_frames - clip
    if mode == "random":
        return torch.randint(last + 1, (n,), generator=generator)
    if mode == "uniform":
        if n == 1:
            return torch.tensor([last // 2])
        return torch.linspace(0, last, n, dtype=torch.float64).round().long()
    starts = torch.arange(0, last + 1, max(1, clip // 2))
    if starts[-1] != last:
        starts = torch.cat([starts, torch.tensor([last])])
    return starts


def take_clips(videos: Tensor, starts: Tensor | int, clip: int) -> Tensor:
    """Clips of ``clip`` frames of videos ``(N, C, V, H, W)``: ``starts`` an int or a 0-d tensor
    (the same start for all) or ``(N,)`` (one per video) -> ``(N, C, clip, H, W)``; ``(N, S)``
    (S clips per video) -> ``(N, S, C, clip, H, W)``."""
    n, _, v = videos.shape[:3]
    starts = torch.as_tensor(starts, dtype=torch.long)
    if starts.ndim == 0:
        starts = starts.expand(n)
    if starts.shape[0] != n or starts.ndim > 2:
        raise UserError(f"Received starts of shape {tuple(starts.shape)} for {n} videos; expected (), ({n},) or "
                        f"({n}, S).")
    if len(starts) and (starts.min() < 0 or starts.max() + clip > v):
        raise UserError(f"clips of {clip} frames starting at {starts.min()}..{starts.max()} do not fit in videos of "
                        f"{v} frames")
    idx = starts[..., None] + torch.arange(clip)  # (N, [S,] clip)
    rows = torch.arange(n).view(n, *([1] * (idx.ndim - 1)))
    out = videos.transpose(1, 2)[rows, idx]  # (N, [S,] clip, C, H, W)
    return out.transpose(-4, -3).contiguous()


# ---------------------------------------------------------------------------------------------
# Optical flow for the temporal stream


def quantize_flow(flow: Tensor) -> Tensor:
    """Flow (..., 2, H, W) in pixels to uint8: round(flow / B * 127.5 + 127.5) clipped to
    [0, 255], B = :data:`FLOW_BOUND`; zero flow is 128."""
    return (flow.float() * (127.5 / FLOW_BOUND) + 127.5).round_().clamp_(0, 255).to(torch.uint8)


def dequantize_flow(q: Tensor) -> Tensor:
    """The inverse of :func:`quantize_flow`, within B / 255 pixels for flow inside [-B, B]."""
    return (q.float() - 127.5) * (FLOW_BOUND / 127.5)


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("FOVEA_CACHE") or "~/.cache/fovea").expanduser() / "video-flow"


def _flow_key(videos: Tensor, method_id: str) -> str:
    import cv2

    from fovea.apps.flow_baselines import FARNEBACK_PARAMS

    h = hashlib.sha256()
    h.update(f"{method_id}|bound={FLOW_BOUND}|shape={tuple(videos.shape)}|opencv={cv2.__version__}|"
             f"{sorted(FARNEBACK_PARAMS.items()) if method_id == 'farneback' else ''}".encode())
    h.update(memoryview(videos.contiguous().numpy()).cast("B"))
    return h.hexdigest()[:40]


def video_flows(videos: Tensor, method: str | Callable = "farneback", cache_dir: str | Path | None = None,
                key: str | None = None) -> Tensor:
    """uint8 optical flow ``(N, 2, V, H, W)`` (u, v; :func:`quantize_flow`) of uint8 videos
    ``(N, 3, V, H, W)``: index t holds the flow of frame t to frame t + 1, the last index a zero
    flow (128). ``method``: ``"farneback"`` or ``"dis"`` (:mod:`fovea.apps.flow_baselines`), or a
    function ``(frame1, frame2) -> (2, H, W)`` flow in pixels, taking (3, H, W) uint8 tensors,
    cached only when ``key`` names it.

    The result is cached in ``cache_dir`` (default ``$FOVEA_CACHE/video-flow`` or
    ``~/.cache/fovea/video-flow``) as a ``.pt`` file named by a SHA-256 of the videos' bytes, the
    method and :data:`FLOW_BOUND`, written atomically; a later call with the same videos reads it.
    """
    if not isinstance(videos, Tensor) or videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[1] != 3:
        what = f"{tuple(videos.shape)} {videos.dtype}" if isinstance(videos, Tensor) else type(videos).__name__
        raise UserError(f"Received videos of {what}; expected a uint8 tensor (N, 3, V, H, W).")
    if callable(method):
        fn, method_id = method, (f"fn:{key}" if key else None)
    else:
        from fovea.apps import flow_baselines

        if method not in ("farneback", "dis"):
            raise UserError(f"Received flow method {method!r}; expected farneback or dis.")
        fn, method_id = getattr(flow_baselines, method), method
    path = None
    if method_id is not None:
        path = _cache_root(cache_dir) / f"{_flow_key(videos, method_id)}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, weights_only=True)
                if isinstance(cached, Tensor) and cached.dtype == torch.uint8 and cached.shape == (
                        videos.shape[0], 2, *videos.shape[2:]):
                    return cached
            except Exception:  # a damaged cache file is recomputed and replaced
                pass
    n, _, v = videos.shape[:3]
    out = torch.full((n, 2, *videos.shape[2:]), 128, dtype=torch.uint8)
    frames = videos if callable(method) else videos.numpy()  # the OpenCV baselines take arrays as they are
    pairs = range(n * max(v - 1, 0))
    if sys.stderr.isatty() and n * v * videos.shape[-1] * videos.shape[-2] > 2e7:
        try:
            from tqdm import tqdm

            pairs = tqdm(pairs, desc="optical flow", unit="pair", leave=False)
        except ImportError:
            pass
    for p in pairs:
        i, t = divmod(p, v - 1)
        out[i, :, t] = quantize_flow(fn(frames[i, :, t], frames[i, :, t + 1]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".flow.", suffix=".pt", dir=path.parent)
        os.close(fd)
        try:
            torch.save(out, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out

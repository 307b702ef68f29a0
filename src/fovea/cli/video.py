"""`fovea predict RUN VIDEO ...` for a video run: the top-k classes of each video (a file or a
folder of frames), from the softmax averaged over its dense clips. `fovea predict` sends video
runs here (see fovea.cli.infer)."""

from __future__ import annotations

from pathlib import Path

from fovea.errors import UserError


def collect_videos(paths: list[str]) -> list[Path]:
    """Video files and frame folders: a folder holding videos or frame folders is searched one
    level down; a folder of images is one video."""
    from fovea.cli.infer import IMAGE_EXTS
    from fovea.data.video import VIDEO_EXTENSIONS

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"video {str(p)!r} not found")
        if p.is_file():
            out.append(p)
            continue
        children = sorted(p.iterdir())
        if any(c.is_file() and c.suffix.lower() in IMAGE_EXTS for c in children):
            out.append(p)  # a folder of frames
        else:
            found = [c for c in children if (c.is_file() and c.suffix.lower() in VIDEO_EXTENSIONS) or c.is_dir()]
            if not found:
                raise UserError(f"folder {str(p)!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) and no frames")
            out += found
    return out


def cmd_predict_video(args) -> int:
    from fovea.cli.infer import print_predictions, top_classes
    from fovea.data.video import read_video
    from fovea.tasks.video import load_video_model, predict_video

    model, info = load_video_model(args.run)
    size = info["image_size"][0]
    files = collect_videos(args.images)
    results = []
    for f in files:
        try:
            video = read_video(f, size=size)
            probs = predict_video(model, info, video, name=f"video {str(f)!r}")
        except UserError as e:
            if len(files) == 1:
                raise
            results.append(dict(path=str(f), error=str(e)))
            continue
        results.append(dict(path=str(f), frames=int(video.shape[1]),
                            top=top_classes(probs, info["classes"], args.top_k)))
    return print_predictions(results, args.json)

"""The web app behind `fovea serve`: a JSON API under ``/api`` and a small page that uses it.

    GET  /                                  the runs browser and try-it page (static HTML/JS/CSS)
    GET  /api/info                          version, served tasks, limits
    GET  /api/runs                          every served run: name, task, model, what it can do
    GET  /api/runs/{name}                   config.json, model.json, plots, metric columns
    GET  /api/runs/{name}/metrics           metrics.csv as JSON (columns and rows)
    GET  /api/runs/{name}/plots/{file}      one PNG from the run's plots/
    GET  /api/runs/{name}/report            the run's report.html
    POST /api/runs/{name}/predict           multipart ``image`` (and ``image2`` for flow and depth)
    GET  /openapi.json                      the OpenAPI schema of all of the above

Safety: a run is addressed by its folder name only, which must match :data:`NAME` and be one of
the served runs, and a plot by a file name matching :data:`PLOT`, whose resolved path must lie
in the run's ``plots/``; anything else is 404 before any file is opened. Uploads are bounded in
bytes (413, checked on ``Content-Length`` and again while the body streams in) and in pixels
(413, from the image header); bytes that are not an image are 415. Inference runs in a bounded
thread pool, off the event loop: past ``max_queue`` requests waiting or running the answer is
503, and a request not answered within ``timeout_s`` is 503 too. Every error is a JSON
``{"detail": ...}``; an unexpected exception is logged and answered with 500 without a traceback.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fovea.errors import UserError
from fovea.serve.images import UploadError
from fovea.serve.predictors import INDEX_FILE, PREDICTORS, uploads_for

log = logging.getLogger("fovea.serve")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a run folder's name: no separators, no leading dot
PLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.png")
STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class Limits:
    """Request bounds. ``work_side``: the longer side fully convolutional tasks (segmentation,
    restoration, style, flow, depth) work at; larger uploads are shrunk to it first."""

    max_upload_bytes: int = 8 * 2**20
    max_pixels: int = 4096 * 4096
    work_side: int = 512
    timeout_s: float = 30.0
    max_queue: int = 16
    workers: int = 1


# ------------------------------------------------------------------------------- runs


class RunCatalog:
    """The served runs by folder name: the ``runs`` given, then every run folder directly in
    ``runs_dir`` (looked at again when an unknown name is asked for, so new runs appear)."""

    def __init__(self, runs: list[Path], runs_dir: Path | None = None):
        self.explicit, self.runs_dir = [Path(r) for r in runs], Path(runs_dir) if runs_dir else None
        names: dict[str, Path] = {}
        for r in self.explicit:
            if not (r / "config.json").is_file():
                raise UserError(f"run directory {str(r)!r} not found (expected {str(r / 'config.json')!r})")
            if not NAME.fullmatch(r.name):
                raise UserError(f"run directory {str(r)!r}: its name must be letters, digits, '.', '_' or '-'")
            if r.name in names:
                raise UserError(f"two runs are named {r.name!r} ({str(names[r.name])!r} and {str(r)!r}); "
                                "serve runs with distinct folder names")
            names[r.name] = r.resolve()
        if self.runs_dir is not None and not self.runs_dir.is_dir():
            raise UserError(f"--runs-dir {str(self.runs_dir)!r} is not a folder")
        self._explicit = names
        self.runs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        found = dict(self._explicit)
        if self.runs_dir is not None:
            for p in sorted(self.runs_dir.iterdir()):
                if NAME.fullmatch(p.name) and p.name not in found and (p / "config.json").is_file():
                    found[p.name] = p.resolve()
        with self._lock:
            self.runs = found

    def path(self, name: str) -> Path:
        """The run folder of ``name``; 404 for a name that is not a served run."""
        if not NAME.fullmatch(name):
            raise HTTPException(404, "unknown run")
        if name not in self.runs and self.runs_dir is not None:
            self.refresh()
        if name not in self.runs:
            raise HTTPException(404, f"unknown run {name!r}")
        return self.runs[name]


def inside(root: Path, *parts: str) -> Path | None:
    """``root/parts`` when it is a file whose resolved path stays inside ``root``, else None
    (a symbolic link out of the run folder is not followed)."""
    p = root.joinpath(*parts)
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_file() and real.is_relative_to(root.resolve()) else None


def _read_json(root: Path, name: str) -> dict | None:
    p = inside(root, name)
    if p is None:
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _plots(root: Path) -> list[str]:
    d = root / "plots"
    if not d.is_dir() or not d.resolve().is_relative_to(root.resolve()):
        return []
    return sorted(p.name for p in d.iterdir() if PLOT.fullmatch(p.name) and inside(root, "plots", p.name))


def read_metrics(path: Path) -> dict:
    """metrics.csv as ``{"columns": [...], "rows": [...]}``: numbers as numbers, blanks as null."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    columns = list(rows[0].keys()) if rows else []

    def value(v):
        if v is None or v == "":
            return None
        try:
            f = float(v)
        except ValueError:
            return v
        return f if f == f and abs(f) != float("inf") else None  # JSON has no NaN or infinity

    return dict(columns=columns, rows=[{k: value(v) for k, v in r.items()} for r in rows])


def run_summary(name: str, root: Path) -> dict:
    info = _read_json(root, "model.json") or {}
    cfg = _read_json(root, "config.json") or {}
    task = info.get("task") or cfg.get("task")
    uploads = uploads_for(task) if inside(root, "model.safetensors") else None
    return dict(name=name, task=task, model=info.get("model") or info.get("arch") or cfg.get("model"),
                data=cfg.get("data"), epochs=cfg.get("epochs"), image_size=info.get("image_size"),
                classes=len(info["classes"]) if isinstance(info.get("classes"), list) else None,
                finished=inside(root, "model.safetensors") is not None, predict=uploads is not None,
                uploads=uploads, index=inside(root, INDEX_FILE) is not None,
                report=inside(root, "report.html") is not None)


# ------------------------------------------------------------------------------- bounds


class BodyLimit:
    """ASGI middleware: 413 for a request body above ``max_bytes``, from its Content-Length or,
    for a body without one, as soon as more than that has arrived."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse({"detail": self.message()}, 413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)

    def message(self) -> str:
        return f"the upload is larger than the limit of {self.max_bytes} bytes"


class InferenceQueue:
    """A bounded pool of inference threads: at most ``max_queue`` calls waiting or running (503
    past that), each answered within ``timeout_s`` (503 after; the thread finishes its call and
    holds its place in the queue until then)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.executor = ThreadPoolExecutor(max(1, limits.workers), thread_name_prefix="fovea-serve")
        self.pending = 0

    async def run(self, fn, *args):
        if self.pending >= self.limits.max_queue:
            raise HTTPException(503, f"busy: {self.pending} requests are queued or running; try again",
                                headers={"Retry-After": "1"})
        self.pending += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, f"no answer within the {self.limits.timeout_s:g} s request timeout; "
                                     "try a smaller image or again later", headers={"Retry-After": "5"}) from None

    def _done(self, _future) -> None:
        self.pending -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------- the app


def create_app(runs: list[Path] | tuple = (), *, runs_dir: Path | None = None, limits: Limits | None = None,
               preload: bool = False) -> FastAPI:
    """The ASGI app serving ``runs`` (run folders) and every run in ``runs_dir``. Models are
    loaded on first use (all at start with ``preload``) and kept for the app's life."""
    from fovea import __version__

    limits = limits or Limits()
    catalog = RunCatalog(list(runs), runs_dir)
    if not catalog.runs and runs_dir is None:
        raise UserError("no runs to serve; give run folders or --runs-dir DIR")
    queue = InferenceQueue(limits)
    predictors: dict[str, object] = {}
    loading = threading.Lock()

    def predictor(name: str, root: Path):
        with loading:  # one load per run, however many requests ask at once
            if name not in predictors:
                task = (_read_json(root, "model.json") or {}).get("task")
                predictors[name] = PREDICTORS[task](root, limits)
            return predictors[name]

    @asynccontextmanager
    async def lifespan(app):
        if preload:
            for name, root in catalog.runs.items():
                if run_summary(name, root)["predict"]:
                    await queue.run(predictor, name, root)
        yield
        queue.close()

    app = FastAPI(title="fovea serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Browse fovea runs and try their models on your images. Pictures in answers are "
                              "PNG data URLs.")
    app.state.catalog, app.state.limits, app.state.queue, app.state.predictors = catalog, limits, queue, predictors
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) or "bad request"}, 400)

    @app.exception_handler(UploadError)
    async def _upload_error(request, exc):
        return JSONResponse({"detail": exc.message}, exc.status)

    @app.exception_handler(UserError)
    async def _user_error(request, exc):
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(Exception)
    async def _server_error(request, exc):
        log.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, 500)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if not request.url.path.endswith("/report"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                "object-src 'none'")
        return response

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info", summary="Version, served tasks and request limits")
    async def info():
        return dict(version=__version__, tasks=sorted(PREDICTORS), limits=asdict(limits))

    @app.get("/api/runs", summary="The served runs")
    async def list_runs():
        catalog.refresh()
        return dict(runs=[run_summary(n, p) for n, p in sorted(catalog.runs.items())])

    @app.get("/api/runs/{name}", summary="One run: its configuration, model description and plots")
    async def get_run(name: str):
        root = catalog.path(name)
        cfg = _read_json(root, "config.json") or {}
        model = _read_json(root, "model.json") or {}
        metrics = inside(root, "metrics.csv")
        columns = read_metrics(metrics)["columns"] if metrics else []
        return dict(run_summary(name, root), config=cfg, model_json=model, plots=_plots(root), metric_columns=columns)

    @app.get("/api/runs/{name}/metrics", summary="metrics.csv as JSON")
    async def get_metrics(name: str):
        p = inside(catalog.path(name), "metrics.csv")
        if p is None:
            raise HTTPException(404, f"run {name!r} has no metrics.csv")
        return read_metrics(p)

    @app.get("/api/runs/{name}/plots/{file}", summary="One PNG of the run's plots/",
             responses={200: {"content": {"image/png": {}}}})
    async def get_plot(name: str, file: str):
        root = catalog.path(name)
        p = inside(root, "plots", file) if PLOT.fullmatch(file) else None
        if p is None or p.parent != (root / "plots").resolve():
            raise HTTPException(404, f"run {name!r} has no plot {file!r}" if PLOT.fullmatch(file) else "unknown plot")
        return FileResponse(p, media_type="image/png")

    @app.get("/api/runs/{name}/report", summary="The run's report.html", response_class=HTMLResponse)
    async def get_report(name: str):
        p = inside(catalog.path(name), "report.html")
        if p is None:
            raise HTTPException(404, f"run {name!r} has no report.html")
        return FileResponse(p, media_type="text/html")

    @app.post("/api/runs/{name}/predict", summary="Try the run's model on an image")
    async def predict(name: str,
                      image: UploadFile | None = File(None, description="the image (flow: first frame; depth: left)"),
                      image2: UploadFile | None = File(None, description="flow: second frame; depth: right view"),
                      k: int = Query(5, ge=1, le=100, description="classify: how many classes"),
                      explain: bool = Query(True, description="classify: compute the Grad-CAM overlay"),
                      neighbours: int = Query(8, ge=1, le=50, description="runs with an index: neighbours"),
                      n: int = Query(16, ge=1, le=64, description="gan: how many samples"),
                      seed: int = Query(0, ge=0, le=2**31 - 1, description="gan: noise seed")):
        root = catalog.path(name)
        summary = run_summary(name, root)
        if not summary["finished"]:
            raise HTTPException(409, f"run {name!r} has no model.safetensors yet; is it finished?")
        if not summary["predict"]:
            raise HTTPException(400, f"run {name!r} is a {summary['task']!r} run; the app predicts with "
                                     f"{', '.join(sorted(PREDICTORS))} runs")
        files = [f for f in (image, image2) if f is not None][:summary["uploads"]]
        if len(files) < summary["uploads"]:
            want = "an image" if summary["uploads"] == 1 else "two images (fields image and image2)"
            raise HTTPException(400, f"run {name!r} ({summary['task']}) needs {want} as multipart form data")
        uploads = []
        for f in files:
            data = await f.read(limits.max_upload_bytes + 1)
            if len(data) > limits.max_upload_bytes:
                raise HTTPException(413, f"the upload is larger than the limit of {limits.max_upload_bytes} bytes")
            uploads.append(data)
        params = dict(k=k, explain=explain, neighbours=neighbours, n=n, seed=seed)

        def work():
            return predictor(name, root)(uploads, params)

        result = await queue.run(work)
        return dict(run=name, task=summary["task"], **result)

    return app


__all__ = ["BodyLimit", "InferenceQueue", "Limits", "NAME", "PLOT", "RunCatalog", "create_app", "read_metrics"]

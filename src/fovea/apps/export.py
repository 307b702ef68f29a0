"""Export a run's model to a standard format, and check the export against the PyTorch model.

Formats:

- **onnx**: the model traced by PyTorch's TorchScript-based ONNX exporter
  (``torch.onnx.export(..., dynamo=False)``) at opset :data:`OPSET` = 17, with a dynamic batch axis
  (the spatial size stays the one the run was trained at). Opset 17 is the newest opset this
  exporter covers for every operator the zoo uses (LayerNorm became an ONNX op at 17), and every
  onnxruntime since 1.11 runs it. The ``torch.export``-based exporter (``dynamo=True``) needs the
  ``onnxscript`` package and takes seconds per model; the traced one needs nothing more.
- **torchscript**: ``torch.jit.trace`` (not ``script``): the zoo's modules use Python that
  ``script`` does not compile (dataclass configs, ``NamedTuple`` outputs, input checks that raise
  our own errors), while a trace records the tensor operations of one eval-mode forward pass. Data
  flow that depends on values (none in these models' eval forward) would be frozen by a trace.
- **safetensors**: the weights (``model.safetensors``, the same tensors the run holds) with the
  run's ``model.json`` beside them (``FILE`` with the suffix ``.json``), which rebuilds the model.

Every export is checked before it is put in place: the exported file runs (onnxruntime on CPU for
ONNX, ``torch.jit.load`` for TorchScript) on seeded random inputs of batch 1 and 3 (the trace used
batch 2, so this also checks the batch axis is dynamic), and the largest absolute difference from
the PyTorch model's output must be at most ``atol`` (1e-4). Safetensors must read back bit-exact.
An export that fails its check is not written.

Every task whose model maps one tensor to one tensor exports to ONNX and TorchScript: classify
(images in [0, 1] -> logits, the fitted preprocessing inside), segment (-> per-pixel scores),
autoencoder (-> the reconstruction), superres and denoise (-> the image), stylenet (-> the
stylized image), metric (-> the embedding), depth (the stacked views -> disparity) and gan (the
generator: latent ``z`` -> images). Flow and video runs export their weights (safetensors) only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError

OPSET = 17
FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
ATOL = 1e-4
CHECK_BATCHES = (1, 3)  # the trace runs at batch 2: other sizes show the batch axis is dynamic

# tasks whose model is one tensor in, one tensor out (see load_exportable); the others export weights only
GRAPH_TASKS = ("classify", "segment", "autoencoder", "superres", "denoise", "stylenet", "metric", "depth", "gan")


class ExportCheckError(Exception):
    """The exported file disagrees with the PyTorch model by more than the tolerance."""


@dataclass
class Exportable:
    """A run's model ready to trace: ``model(x)`` returns one tensor for ``x`` of ``input_shape``
    with any batch size in front."""

    model: nn.Module
    info: dict
    input_shape: tuple[int, ...]  # without the batch axis
    input_name: str = "images"
    output_name: str = "output"
    input_kind: str = "pixels"  # "pixels": floats in [0, 1]; "latent": standard normal

    def sample(self, batch: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        shape = (batch, *self.input_shape)
        return torch.randn(shape, generator=g) if self.input_kind == "latent" else torch.rand(shape, generator=g)


@dataclass
class ExportResult:
    format: str
    path: str
    bytes: int
    task: str
    input_name: str | None = None
    input_shape: list | None = None  # with "batch" for the dynamic axis
    output_name: str | None = None
    opset: int | None = None
    method: str | None = None
    check: dict = field(default_factory=dict)  # backend, batches, max_abs_diff, atol, ok
    extra_files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}

    def summary(self) -> str:
        c = self.check
        lines = [f"wrote {self.path} ({self.format}, {self.bytes / 1e6:.2f} MB, task {self.task})"]
        lines += [f"wrote {p}" for p in self.extra_files]
        if self.input_shape:
            opset = f", opset {self.opset}" if self.opset else ""
            method = f", {self.method}" if self.method else ""
            lines.append(f"input {self.input_name} {tuple(self.input_shape)} -> output {self.output_name}{opset}{method}")
        if c and self.format == "safetensors":
            lines.append("check: the weights read back bit-exact")
        elif c:
            lines.append(f"check: {c['backend']} vs PyTorch on batches {c['batches']}: max abs difference "
                         f"{c['max_abs_diff']:.3g} (<= {c['atol']:g}: {'ok' if c['ok'] else 'FAILED'})")
        return "\n".join(lines)


class _Select(nn.Module):
    """One output of a model that returns a tuple-like (the autoencoder's reconstruction)."""

    def __init__(self, model: nn.Module, attr: str):
        super().__init__()
        self.model, self.attr = model, attr

    def forward(self, x):
        return getattr(self.model(x), self.attr)


def load_exportable(run_dir: str | Path) -> Exportable:
    """The model of a finished run, in eval mode on CPU, as one tensor in -> one tensor out."""
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    task = info.get("task")
    if task not in GRAPH_TASKS:
        raise UserError(f"run {str(run.path)!r} is a {task!r} run; --format onnx and torchscript export "
                        f"{', '.join(GRAPH_TASKS)} runs (every run exports --format safetensors)")
    size = info.get("image_size") or ()
    size = (size, size) if isinstance(size, int) else tuple(size)  # a style net records one side
    if task == "classify":
        from fovea.tasks.classify import load_classifier

        model, info = load_classifier(run.path)
        return Exportable(model, info, (info["in_channels"], *size), output_name="logits")
    if task == "segment":
        from fovea.tasks.segment import load_segmenter

        model, info = load_segmenter(run.path)
        return Exportable(model, info, (info["in_channels"], *size), output_name="scores")
    if task == "autoencoder":
        from fovea.tasks.autoencode import load_autoencoder

        model, info = load_autoencoder(run.path)
        return Exportable(_Select(model, "recon").eval(), info, (info["in_channels"], *size),
                          output_name="reconstruction")
    if task in ("superres", "denoise"):
        from fovea.tasks.restore import load_restorer

        model, info = load_restorer(run.path, task)
        side = int(info.get("patch") or 33)
        return Exportable(model, info, (info["in_channels"], side, side), output_name="image")
    if task == "stylenet":
        from fovea.tasks.stylenet import load_stylenet

        model, info = load_stylenet(run.path)
        side = info.get("image_size") or 256
        side = side if isinstance(side, int) else side[0]
        return Exportable(model, info, (3, side, side), output_name="image")
    if task == "metric":
        from fovea.tasks.metric import load_metric_model

        model, info = load_metric_model(run.path)
        return Exportable(model, info, (info["in_channels"], *size), output_name="embedding")
    if task == "depth":
        from fovea.tasks.depth import load_depth_model

        model, info = load_depth_model(run.path)
        return Exportable(model, info, (model.views * model.cfg.in_channels, *tuple(info["image_size"])),
                          output_name="disparity")
    from fovea.tasks.gan import load_gan  # task == "gan": the generator

    model, info = load_gan(run.path)
    return Exportable(model.generator.eval(), info, (model.latent_dim,), input_name="latent", output_name="images",
                      input_kind="latent")


@contextlib.contextmanager
def _quiet_trace():
    """The tracer warns about every Python bool it freezes (our input-size checks) and the
    TorchScript-based ONNX exporter and torch.jit about their deprecation: none concerns a user here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit deprecated (see docs/export.md)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        yield


@contextlib.contextmanager
def _temp_beside(out: Path):
    """A temp path in ``out``'s folder, renamed over ``out`` when the block succeeds, removed if not."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an exported model is an ordinary file
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


class FixedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for one known input size, as two matrix products
    ``y = P_h x P_w^T``: row ``i`` of ``P_h`` averages input rows ``floor(i H / h)`` to
    ``ceil((i + 1) H / h) - 1``, PyTorch's bins. The TorchScript-based ONNX exporter cannot export
    an adaptive pool whose output size does not divide its input size (VGG's 7x7 pool after a
    feature map smaller than 7x7, AlexNet's 6x6); MatMul exports everywhere."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        self.register_buffer("p_h", _bins(in_size[0], out_size[0]), persistent=False)
        self.register_buffer("p_w", _bins(in_size[1], out_size[1]).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.p_h, x), self.p_w)


def _bins(n_in: int, n_out: int) -> torch.Tensor:
    p = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        p[i, start:end] = 1.0 / (end - start)
    return p


def onnx_ready(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model``, or a copy of it in which every adaptive average pool that is not a global one is
    a :class:`FixedAdaptiveAvgPool2d` for the input size it sees on ``example``."""
    import copy

    sizes: dict[str, tuple] = {}
    pools = {n: m for n, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)
             and tuple(nn.modules.utils._pair(m.output_size)) != (1, 1)}
    if not pools:
        return model
    def record(name):
        def hook(module, inputs, output) -> None:  # returns None: the output is left as it is
            sizes.setdefault(name, (tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:])))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in pools.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    copy_ = copy.deepcopy(model)
    for name, (in_size, out_size) in sizes.items():
        parent, _, leaf = name.rpartition(".")
        setattr(copy_.get_submodule(parent) if parent else copy_, leaf, FixedAdaptiveAvgPool2d(in_size, out_size))
    return copy_.eval()


def export_onnx(ex: Exportable, path: str | Path, opset: int = OPSET) -> None:
    """Trace ``ex.model`` at batch 2 into an ONNX file with a dynamic batch axis."""
    x = ex.sample(2)
    with _quiet_trace(), torch.no_grad():
        torch.onnx.export(onnx_ready(ex.model, x), (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=[ex.input_name], output_names=[ex.output_name],
                          dynamic_axes={ex.input_name: {0: "batch"}, ex.output_name: {0: "batch"}},
                          do_constant_folding=True)


def export_torchscript(ex: Exportable, path: str | Path) -> None:
    """``torch.jit.trace`` of ``ex.model`` at batch 2, saved with ``torch.jit.save``."""
    with _quiet_trace(), torch.no_grad():
        traced = torch.jit.trace(ex.model, (ex.sample(2),), check_trace=False)
        torch.jit.save(traced, str(path))


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for an exported file (``threads``: intra-op threads, None = ort's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(ex: Exportable, run_exported, backend: str, atol: float = ATOL,
            batches: tuple[int, ...] = CHECK_BATCHES) -> dict:
    """Largest |exported - PyTorch| over seeded inputs of each batch size in ``batches``."""
    worst = 0.0
    for i, b in enumerate(batches):
        x = ex.sample(b, seed=100 + i)
        with torch.no_grad():
            ref = ex.model(x).float()
        got = torch.as_tensor(run_exported(x)).float()
        if got.shape != ref.shape:
            raise ExportCheckError(f"the exported model returned shape {tuple(got.shape)} for batch {b}, "
                                   f"PyTorch {tuple(ref.shape)}")
        worst = max(worst, float((got - ref).abs().max()))
    return dict(backend=backend, batches=list(batches), max_abs_diff=worst, atol=atol, ok=worst <= atol)


def check_onnx(ex: Exportable, path: str | Path, atol: float = ATOL) -> dict:
    sess = onnx_session(path)
    return compare(ex, lambda x: sess.run(None, {ex.input_name: x.numpy()})[0], "onnxruntime", atol)


def check_torchscript(ex: Exportable, path: str | Path, atol: float = ATOL) -> dict:
    with _quiet_trace():
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x):
        with torch.no_grad():
            return loaded(x)

    return compare(ex, run, "torch.jit.load", atol)


def _export_safetensors(run_dir: Path, out: Path) -> ExportResult:
    from safetensors.torch import load_file, save_file

    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    src = run.path / "model.safetensors"
    if not src.is_file():
        raise UserError(f"{str(src)!r} not found; is {str(run.path)!r} a finished fovea run?")
    state = {k: v.contiguous() for k, v in load_file(str(src)).items()}
    meta = out.with_suffix(".json")
    if meta == out:
        raise UserError(f"--out {str(out)!r}: expected a file name not ending in .json (model.json goes beside it)")
    with _temp_beside(out) as tmp:
        save_file(state, str(tmp), metadata={"fovea_task": str(info.get("task")), "format": "pt"})
        back = load_file(str(tmp))
        same = back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
        if not same:
            raise ExportCheckError(f"{out} did not read back the weights of {src}")
    with _temp_beside(meta) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return ExportResult("safetensors", str(out), out.stat().st_size, str(info.get("task")), extra_files=[str(meta)],
                        check=dict(backend="safetensors read-back", batches=[], max_abs_diff=0.0, atol=0.0, ok=True))


def export_run(run_dir: str | Path, fmt: str, out: str | Path, *, atol: float = ATOL, check: bool = True,
               opset: int = OPSET) -> ExportResult:
    """Export the model of a run to ``out`` in ``fmt`` (``onnx``, ``torchscript`` or ``safetensors``),
    check it against the PyTorch model and only then put it in place (atomically)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; expected a file name, e.g. model{SUFFIXES[fmt]}")
    if fmt == "safetensors":
        return _export_safetensors(Path(run_dir), out)
    ex = load_exportable(run_dir)
    shape = ["batch", *ex.input_shape]
    with _temp_beside(out) as tmp:
        if fmt == "onnx":
            export_onnx(ex, tmp, opset)
            result = dict(opset=opset, method="traced (torch.onnx.export, dynamo=False)")
            checked = check_onnx(ex, tmp, atol) if check else {}
        else:
            export_torchscript(ex, tmp)
            result = dict(method="torch.jit.trace")
            checked = check_torchscript(ex, tmp, atol) if check else {}
        if checked and not checked["ok"]:
            raise ExportCheckError(f"the {fmt} export differs from the PyTorch model by {checked['max_abs_diff']:.3g} "
                                   f"(> {atol:g}); nothing written to {out}")
    return ExportResult(fmt, str(out), out.stat().st_size, str(ex.info.get("task")), input_name=ex.input_name,
                        input_shape=shape, output_name=ex.output_name, check=checked, **result)


__all__ = ["ATOL", "FORMATS", "GRAPH_TASKS", "OPSET", "ExportCheckError", "ExportResult", "Exportable",
           "FixedAdaptiveAvgPool2d", "check_onnx", "check_torchscript", "compare", "export_onnx", "export_run",
           "export_torchscript", "load_exportable", "onnx_ready", "onnx_session"]

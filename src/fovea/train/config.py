"""Training configuration: one dataclass, filled from CLI flags, a JSON/YAML file or a recipe,
written whole to ``config.json`` in the run directory so ``fovea train --config`` reruns it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from fovea.errors import UserError


@dataclass
class TrainConfig:
    task: str = "classify"
    # data
    data: str = "digits"
    data_root: str | None = None
    image_size: int | None = None  # side images are delivered at (None: the source's own size)
    val_fraction: float = 0.1  # carved from train, stratified, when the source has no validation split
    on_bad_image: str = "skip"  # skip | fail
    in_memory: bool | None = None  # None: in memory when it fits (2 GiB), else streamed by DataLoader workers
    classes: str | None = None  # train on some classes only: "0-4", "0,3,7" or names
    train_fraction: float = 1.0  # a stratified fraction of the training labels
    # model
    model: str = "lenet5"
    model_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # start from a fovea run, a weights file or "torchvision" (ImageNet)
    freeze: str = "none"  # none | backbone (train the output layer only)
    freeze_until: str | None = None  # freeze every parameter up to and including this module, e.g. layer3
    freeze_modules: str | None = None  # comma-separated module names to freeze
    freeze_bn: bool = False  # keep batch-norm statistics fixed
    lr_backbone: float | None = None  # learning rate of everything but the output layer
    # autoencoders and GANs (docs/autoencoders.md, docs/gans.md)
    kind: str = "fc"  # autoencoder: fc | conv | linear | sparse | denoising | contractive | vae
    arch: str | None = None  # autoencoder: fc | conv | linear (default: the kind's); gan: fc | dcgan
    latent_dim: int | None = None  # code size (None: the architecture's default)
    hidden: list[int] | None = None  # fully connected autoencoder: hidden widths of the encoder
    encoder_act: str | None = None  # autoencoder hidden activation (default relu; sigmoid for contractive)
    recon_loss: str | None = None  # mse | bce (default: bce for vae, mse otherwise)
    noise: str = "gaussian:0.3"  # denoising autoencoder corruption: gaussian:SIGMA or mask:P
    sparsity: float = 1e-3  # sparse autoencoder: lambda * sum |h|
    contraction: float = 0.1  # contractive autoencoder: lambda * ||dh/dx||_F^2
    beta: float = 1.0  # weight of the VAE's KL term
    normal_classes: str | None = None  # anomaly detection: train and validate on these classes only
    gan_loss: str = "non-saturating"  # minimax | non-saturating
    d_steps: int = 1  # discriminator steps per generator step
    lr_d: float | None = None  # discriminator learning rate (default: --lr)
    width: int = 64  # GAN feature width
    # metric learning (docs/metric-learning.md)
    metric_loss: str = "triplet"  # contrastive | triplet
    miner: str | None = None  # all | random | hard | semihard | batch-hard (default: semihard; contrastive: all)
    branches: str = "shared"  # shared | unshared | half (cross-domain runs)
    embed_dim: int = 64
    normalize: bool = True  # L2-normalize the embeddings
    domain: str | None = None  # cross-domain: anchors are the images mapped to this domain (sketch)
    pk: str | None = None  # batches of P classes x K images, e.g. 10x12 (sets the batch size to P*K)
    metric_margin: float | None = None  # default 0.2 for triplet (squared distances), 1.0 for contrastive
    # pixels to pixels (docs/segmentation.md, superres-denoise.md, optical-flow.md, depth.md)
    num_classes: int | None = None  # segmentation of a mask folder: class ids 0..num_classes-1 (255: ignore)
    patch: int | None = None  # side of the training crops or patches (None: the task's default)
    scale: int = 3  # super-resolution factor
    sigma: float = 25.0  # denoising: standard deviation of the Gaussian noise, in 0-255 units
    smoothness: float = 0.1  # depth from stereo: weight of the disparity smoothness term
    # video (docs/video.md)
    clip: int = 16  # frames per clip
    frames: int | None = None  # frames kept per video (None: the source's default)
    flow_stack: int = 10  # two-stream: L optical-flow fields stacked into the temporal stream's 2L channels
    flow_method: str = "farneback"  # two-stream: farneback | dis | a fovea flow run directory
    # feed-forward stylization (docs/stylization.md)
    style: str | None = None  # stylenet: the style image
    content_weight: float = 1.0  # stylenet: weight of the feature reconstruction (content) loss
    style_weight: float = 0.3  # stylenet: weight of the style (Gram) loss, relative terms (docs/stylization.md)
    tv_weight: float = 1e-6  # stylenet: weight of the total-variation regularizer
    temporal_weight: float = 0.0  # stylenet: weight of the temporal consistency (stability) term
    # optimization
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    scale_lr: bool = False  # linear scaling rule: lr x batch / 256 (Goyal et al.)
    optimizer: str = "momentum"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)  # epochs, for the step schedule
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    patience: int = 5  # plateau schedule
    loss: str = "ce"
    smoothing: float = 0.1
    margin: float = 1.0
    aux_weight: float = 0.3  # GoogLeNet / Inception auxiliary losses
    adv_train: str | None = None  # adversarial training: fgsm | pgd (half of each batch's loss)
    adv_eps: float = 0.1  # L-inf radius in [0, 1] pixel units
    clip_norm: float | None = None
    clip_value: float | None = None
    accumulate: int = 1  # gradient accumulation steps
    ema: float | None = None  # weight EMA decay, e.g. 0.999
    early_stop: int | None = None  # epochs without validation improvement
    # data pipeline
    augment: str | None = None  # e.g. "crop:2,hflip,rotate:10"
    preprocess: str = "zscore"
    # execution
    seed: int = 0
    deterministic: bool = False
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    channels_last: bool = False
    compile: bool = False
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    # run
    out: str | None = None  # run directory (default runs/<model>-<data>-<time>)
    save_every_steps: int | None = None
    log_every_steps: int = 50
    recipe: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"{source} has unknown keys {', '.join(unknown)}; expected some of {', '.join(sorted(names))}")
        return cls(**d)


def read_config_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    try:
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise UserError(f"config file {str(p)!r} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} holds a {type(data).__name__}, expected a mapping of settings")
    return data


# Recipes: named settings for a data set, measured in README.md.
RECIPES: dict[str, dict] = {
    # LeNet-5 on scikit-learn's 8x8 digits, upsampled to 32x32 (the input LeNet-5 was built for).
    "digits-lenet": dict(data="digits", model="lenet5", image_size=32, epochs=30, batch_size=32, lr=0.05,
                         optimizer="momentum", momentum=0.9, weight_decay=5e-4, schedule="cosine",
                         augment="translate:0.08,rotate:8", val_fraction=0.0, preprocess="zscore"),
    # A 3-block CNN (conv-BN-ReLU-pool x 3, fc256) trained with bf16 autocast, which CPUs with
    # AVX-512 BF16 run about twice as fast as fp32; 13 epochs of one-cycle SGD.
    "fashion-mnist-fast": dict(data="fashion-mnist", model="conv3x3-32,bn,relu,maxpool2,conv3x3-64,bn,relu,maxpool2,"
                               "conv3x3-128,bn,relu,maxpool2,fc256,relu,dropout0.5,fc10",
                               epochs=13, batch_size=128, lr=0.1, optimizer="momentum", weight_decay=5e-4,
                               schedule="onecycle", augment="hflip", val_fraction=0.0, preprocess="zscore",
                               precision="bf16-mixed", channels_last=True),
}


# What each task starts from before a recipe, a config file and flags are applied: settings that
# suit it better than the classifier's (autoencoders and GANs train with Adam on raw [0, 1] pixels).
TASK_DEFAULTS: dict[str, dict] = {
    "autoencoder": dict(optimizer="adam", lr=1e-3, batch_size=128, epochs=20, preprocess="none", schedule="cosine"),
    # DCGAN's settings (Radford et al. 2016): Adam, lr 2e-4, beta1 0.5 (set by the task), batch 128
    "metric": dict(optimizer="adam", lr=1e-3, batch_size=128, epochs=10, schedule="cosine"),
    "gan": dict(optimizer="adam", lr=2e-4, batch_size=128, epochs=10, preprocess="none", val_fraction=0.0),
    # pixels to pixels: Adam on raw [0, 1] pixels; each line is its task's own
    "segment": dict(data="shapes", model="unet-same", optimizer="adam", lr=2e-3, batch_size=16, epochs=25,
                    preprocess="none", schedule="cosine", augment="hflip,vflip"),
    "superres": dict(data="skimage", model="srcnn", optimizer="adam", lr=1e-3, batch_size=16, epochs=20,
                     preprocess="none", schedule="cosine"),
    "denoise": dict(data="skimage", model="dncnn", optimizer="adam", lr=1e-3, batch_size=64, epochs=20,
                    preprocess="none", schedule="cosine"),
    "flow": dict(data="chairs", model="flownets", optimizer="adam", lr=1e-3, batch_size=8, epochs=12,
                 preprocess="zscore", schedule="cosine", augment="hflip,vflip"),
    "video": dict(data="moving-shapes", model="c3d", optimizer="adam", lr=1e-3, batch_size=16, epochs=15,
                  preprocess="zscore", schedule="cosine"),
    # depth: --scale is the factor the pair is shrunk by; --loss PHOTOMETRIC:SMOOTHNESS (docs/depth.md)
    "depth": dict(data="motorcycle", model="disparity", optimizer="adam", lr=1e-3, batch_size=2, epochs=8,
                  preprocess="none", schedule="cosine", scale=4, loss="ssim:edge", smoothness=0.01, patch=160),
    # feed-forward stylization (Johnson et al. 2016): Adam 1e-3 on content images (docs/stylization.md)
    # --loss picks the loss network's weights: auto | torchvision | random | FILE [:relu3_3]
    "stylenet": dict(data="skimage", model="stylenet", optimizer="adam", lr=1e-3, batch_size=4, epochs=2,
                     preprocess="none", schedule="constant", loss="auto"),
}


def apply_recipe(name: str) -> dict:
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}{hint}")
    return dict(RECIPES[name], recipe=name)

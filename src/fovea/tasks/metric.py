"""Metric learning: Siamese (contrastive loss) and triplet networks on any registered backbone,
with in-batch mining, P x K batches, and cross-domain (sketch -> image) training.

A step embeds the batch with branch f and, for a cross-domain run, the batch's images with
branch g and their sketches with f; the loss uses every valid pair or triplet of the batch that
the miner keeps. The report measures retrieval (recall@k of test queries against the training
gallery), verification (ROC-AUC of the distance on held-out pairs, with a threshold chosen on
validation pairs) and draws the embeddings before and after training.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task


def parse_pk(text: str | None) -> tuple[int, int] | None:
    """``"8x16"`` -> (P, K): P classes with K images each per batch."""
    if not text:
        return None
    try:
        p, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--pk {text!r}: expected PxK, e.g. 8x16 (P classes, K images of each)") from None
    if p < 1 or k < 2:
        raise UserError(f"--pk {text!r}: needs P >= 1 classes and K >= 2 images of each (positives need 2)")
    return p, k


def euclidean_nearest(gallery: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k gallery rows nearest to each query in Euclidean distance, through the
    exact inner-product search of :func:`fovea.apps.retrieval.nearest`:
    argmin ||q - g||^2 = argmax (2 q.g - ||g||^2) = argmax [2q, -1] . [g, ||g||^2]."""
    from fovea.apps.retrieval import nearest

    g = torch.cat([gallery.float(), gallery.float().pow(2).sum(1, keepdim=True)], 1)
    q = torch.cat([2 * queries.float(), -torch.ones(len(queries), 1)], 1)
    return nearest(g, q, k=k, backend="torch")[1]


def recall_at_k(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                gallery_labels: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k: the share of queries with at least one same-label item among their k nearest
    gallery items (Euclidean)."""
    ks = [k for k in ks if k <= len(gallery)]
    idx = euclidean_nearest(gallery, queries, max(ks))
    hits = gallery_labels[idx] == query_labels[:, None]
    return {f"recall@{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


def sample_pairs(labels: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pairs (i, j), half of them with equal labels, drawn with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    by_class = {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}
    classes = [c for c, idx in by_class.items() if len(idx) >= 2]
    if not classes or len(by_class) < 2:
        raise UserError("verification pairs need a class with 2 images and at least 2 classes")
    i_list, j_list = [], []
    for t in range(n):
        if t % 2 == 0:  # a similar pair
            c = classes[int(torch.randint(len(classes), (1,), generator=g))]
            pick = by_class[c][torch.randperm(len(by_class[c]), generator=g)[:2]]
            i_list.append(int(pick[0])), j_list.append(int(pick[1]))
        else:
            while True:
                a, b = torch.randint(len(labels), (2,), generator=g).tolist()
                if labels[a] != labels[b]:
                    break
            i_list.append(a), j_list.append(b)
    i, j = torch.tensor(i_list), torch.tensor(j_list)
    return i, j, labels[i] == labels[j]


def verification(emb: torch.Tensor, labels: torch.Tensor, n_pairs: int = 4000, seed: int = 0,
                 threshold: float | None = None) -> dict:
    """ROC-AUC of -distance as a same-class score over sampled pairs; the distance threshold
    that maximizes accuracy on these pairs (or the accuracy at ``threshold``)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    i, j, same = sample_pairs(labels, n_pairs, seed)
    d = (emb[i].float() - emb[j].float()).norm(dim=1).numpy()
    same = same.numpy()
    out = dict(roc_auc=float(roc_auc_score(same, -d)), pairs=int(len(d)))
    if threshold is None:
        cand = np.unique(d)
        accs = [((d <= t) == same).mean() for t in cand] if len(cand) <= 5000 else None
        if accs is None:
            cand = np.quantile(d, np.linspace(0, 1, 2001))
            accs = [((d <= t) == same).mean() for t in cand]
        threshold = float(cand[int(np.argmax(accs))])
    out["threshold"] = float(threshold)
    out["accuracy"] = float(((d <= threshold) == same).mean())
    fpr, tpr, _ = roc_curve(same, -d)
    out["_roc"] = (fpr, tpr)
    out["_distances"] = (d, same)
    return out


@register_task
class MetricLearning(Task):
    name = "metric"
    monitor = "loss"

    def label(self, cfg) -> str:
        return f"{cfg.metric_loss}-{cfg.model}"

    def batch_order(self, cfg):
        pk = parse_pk(cfg.pk)
        if pk is None:
            return None
        from fovea.train.sampling import pk_order

        return lambda labels, epoch: pk_order(labels, pk[0], pk[1], cfg.seed, epoch)

    def build_model(self, cfg, data, image_size):
        from fovea.data.transforms import Preprocess
        from fovea.losses.metric import CONTRASTIVE_MINERS, METRIC_LOSSES, MINERS
        from fovea.models.siamese import MetricNet
        from fovea.tasks.classify import build_net
        from fovea.train import finetune

        if cfg.metric_loss not in METRIC_LOSSES:
            raise UserError(f"--metric-loss {cfg.metric_loss!r}: expected one of {', '.join(METRIC_LOSSES)}")
        self.miner = cfg.miner or ("semihard" if cfg.metric_loss == "triplet" else "all")
        allowed = MINERS if cfg.metric_loss == "triplet" else CONTRASTIVE_MINERS
        if self.miner not in allowed:
            raise UserError(f"--miner {self.miner!r} with the {cfg.metric_loss} loss: expected one of {', '.join(allowed)}")
        if cfg.domain is not None:
            from fovea.data.domains import DOMAINS

            if cfg.domain not in DOMAINS:
                raise UserError(f"--domain {cfg.domain!r}: expected one of {', '.join(DOMAINS)}")
        elif cfg.branches != "shared":
            raise UserError(f"--branches {cfg.branches}: two kinds of branch need two domains; add --domain sketch")
        self.cfg = cfg
        self.margin = cfg.metric_margin if cfg.metric_margin is not None else (
            0.2 if cfg.metric_loss == "triplet" else 1.0)
        run_info, weights = finetune.resolve_init(cfg.init)
        self.model_name, self.model_kwargs = ((run_info["model"], run_info.get("model_kwargs") or {}) if run_info
                                              else (cfg.model, cfg.model_kwargs))
        shape = (data.in_channels, *image_size)

        def make_backbone():
            net = build_net(self.model_name, len(data.classes), data.in_channels, image_size, self.model_kwargs,
                            None if run_info else weights)
            if run_info:
                finetune.load_run_weights(net, weights)
            return net

        model = MetricNet(make_backbone, shape, dim=cfg.embed_dim, branches=cfg.branches, normalize=cfg.normalize,
                          preprocess=Preprocess(cfg.preprocess))
        self.initial = copy.deepcopy(model).cpu()  # "before training" in the report
        return model

    def _loss(self, model, x, y):
        from fovea.losses.metric import batch_contrastive_loss, batch_triplet_loss

        if self.cfg.domain:
            from fovea.data.domains import to_domain

            a, b = model.embed(to_domain(x, self.cfg.domain), "a"), model.embed(x, "b")
            lb = y
        else:
            a, b, lb = model(x), None, None
        if self.cfg.metric_loss == "triplet":
            loss, stats = batch_triplet_loss(a, y, b, lb, margin=self.margin, miner=self.miner)
        else:
            loss, stats = batch_contrastive_loss(a, y, b, lb, margin=self.margin, miner=self.miner)
        n = len(y)
        return loss, dict(loss=loss.detach() * n, active=stats["active"] * n, count=n)

    def training_step(self, model, x, y):
        return self._loss(model, x, y)

    def eval_step(self, model, x, y):
        _, stats = self._loss(model, x, y)
        return stats

    def export_info(self, cfg, data, image_size):
        return dict(model=self.model_name, model_kwargs=self.model_kwargs, num_classes=len(data.classes),
                    in_channels=data.in_channels, image_size=list(image_size), classes=list(data.classes),
                    preprocess=cfg.preprocess, data=cfg.data, embed_dim=cfg.embed_dim, normalize=cfg.normalize,
                    branches=cfg.branches, domain=cfg.domain, metric_loss=cfg.metric_loss, miner=self.miner,
                    margin=self.margin, threshold=getattr(self, "threshold", None))

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        out = metric_report(model, self.initial, data, batches_for, run.plots, domain=self.cfg.domain)
        self.threshold = out.get("verification", {}).get("threshold")
        if self.threshold is not None:  # the threshold chosen on validation pairs goes with the model
            info = run.read_json("model.json")
            info["threshold"] = self.threshold
            run.write_json("model.json", info)
        run.write_json("metric.json", out)
        write_report(run.path, title=f"fovea metric learning: {run.path.name}")
        return dict(metric=out)


@torch.no_grad()
def embed_split(model: nn.Module, batches, branch: str = "a", domain: str | None = None,
                limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (branch f or g, optionally of the split's images mapped to ``domain``) and labels."""
    from fovea.data.domains import to_domain

    was = model.training
    model.eval()
    embs, labels, seen = [], [], 0
    for xb, yb, _ in batches.epoch(0):
        x = xb.float().div(255)
        if domain:
            x = to_domain(x, domain)
        embs.append(model.embed(x, branch).float().cpu())
        labels.append(yb.cpu())
        seen += len(yb)
        if limit and seen >= limit:
            break
    model.train(was)
    return torch.cat(embs), torch.cat(labels)


def metric_report(model, initial, data, batches_for, plots: Path, domain: str | None = None,
                  gallery_limit: int | None = None) -> dict:
    """Retrieval (test queries against the training gallery), verification on test pairs with
    the threshold chosen on validation pairs, and the pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = data.test if data.test is not None else data.val
    if queries is None:
        return {}
    device = next(model.parameters()).device
    initial = initial.to(device)
    initial.preprocess.load_state_dict(model.preprocess.state_dict())  # fitted after the copy was taken
    q_branch = "a"
    g_branch = "b" if domain else "a"
    out: dict = {}
    for name, net in (("before", initial), ("after", model)):
        gal, gal_y = embed_split(net, batches_for(data.train), g_branch, limit=gallery_limit)
        qe, qy = embed_split(net, batches_for(queries), q_branch, domain=domain)
        out[f"retrieval_{name}"] = recall_at_k(qe, qy, gal, gal_y)
        if name == "after" and not domain:
            val_thr = None
            if data.val is not None:
                ve, vy = embed_split(net, batches_for(data.val))
                val_thr = verification(ve, vy)["threshold"]
            ver = verification(qe, qy, threshold=val_thr)
            fpr, tpr = ver.pop("_roc")
            d, same = ver.pop("_distances")
            ver["threshold_from"] = "validation pairs" if val_thr is not None else "test pairs (no validation split)"
            out["verification"] = ver
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(fpr, tpr)
            ax.plot([0, 1], [0, 1], "--", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate",
                   title=f"verification ROC (AUC {ver['roc_auc']:.3f})")
            fig.tight_layout()
            fig.savefig(plots / "roc.png", dpi=100)
            plt.close(fig)
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.hist(d[same], bins=50, alpha=0.6, density=True, label="same class")
            ax.hist(d[~same], bins=50, alpha=0.6, density=True, label="different class")
            ax.axvline(ver["threshold"], color="k", ls="--", label="threshold")
            ax.set(xlabel="embedding distance", title="distances of test pairs")
            ax.legend()
            fig.tight_layout()
            fig.savefig(plots / "distances.png", dpi=100)
            plt.close(fig)
        _scatter(qe[:2000], qy[:2000], data.classes, plots / f"embedding-{name}.png",
                 f"test embeddings {name} training (PCA)")
    return out


def _scatter(emb: torch.Tensor, labels: torch.Tensor, classes, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    xy = PCA(2, random_state=0).fit_transform(emb.numpy()) if emb.shape[1] > 2 else emb.numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    lab = labels.numpy()
    for c in sorted(set(lab.tolist())):
        m = lab == c
        ax.scatter(xy[m, 0], xy[m, 1], s=3, label=str(classes[c]))
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_metric_model(run_dir: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """The trained embedding network of a metric-learning run, in eval mode."""
    from fovea.data.transforms import Preprocess
    from fovea.models.siamese import MetricNet
    from fovea.tasks.classify import build_net
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "metric":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a metric-learning run")
    size = tuple(info["image_size"])
    model = MetricNet(lambda: build_net(info["model"], info["num_classes"], info["in_channels"], size,
                                        info.get("model_kwargs")),
                      (info["in_channels"], *size), dim=info["embed_dim"], branches=info["branches"],
                      normalize=info["normalize"], preprocess=Preprocess(info["preprocess"]))
    run.load_weights(model)
    return model.to(device).eval(), info


__all__ = ["MetricLearning", "embed_split", "euclidean_nearest", "load_metric_model", "metric_report", "parse_pk",
           "recall_at_k", "sample_pairs", "verification"]

"""The memorisation proxies a researcher would test g against today, per sample, for one network.

- **Prediction depth** (Baldock, Maennel, Neyshabur, NeurIPS 2021): k-NN probes (k = 30) on the
  pooled representation after the stem and after every residual unit, with the training set and its
  labels as the probes' reference (a training sample never votes for itself); a sample's depth is
  the earliest layer from which every probe agrees with the network's final prediction, counted in
  units (0 = the stem, 1..3n = the units), and 3n + 1 when even the last probe disagrees.
- **Input-loss curvature** (Garg, Ravikumar, Roy, ICML 2024; purdue-nrl/Memorization-Curvature's
  ``get_regularized_curvature_for_batch``): the mean over Rademacher probes v of
  ``|grad_x L(x + h v) - grad_x L(x)|`` with h = 1e-3, in eval mode. Each sample's loss is its own
  (reduction "sum"), so its score does not depend on the size of its batch (the reference code's mean
  reduction divides every score of a batch by the batch size, a constant within full batches).
- **Loss sensitivity**: ``|grad_x L(x)|``, the input-gradient norm.

EL2N (Paul et al. 2021) and the cumulative training loss (CSL, Ravikumar et al. 2025) come from the
per-epoch histories a run records (``train/signals.py``), not from a network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import CifarResNet, build_model, unwrap

LossFn = Callable[[Tensor], Tensor]  # inputs (B, ...) -> per-sample losses (B,)
KNN_K = 30
CURVATURE_H = 1e-3


# ----------------------------------------------------------------------------- input gradients


def _input_grad(loss_fn: LossFn, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x).sum(), x)
    return grad


def loss_sensitivity(loss_fn: LossFn, x: Tensor) -> Tensor:
    """|grad_x L(x)| per sample (B,)."""
    return _input_grad(loss_fn, x).flatten(1).norm(dim=1)


def curvature(
    loss_fn: LossFn, x: Tensor, probes: int = 10, h: float = CURVATURE_H, generator: torch.Generator | None = None
) -> Tensor:
    """Mean over ``probes`` Rademacher directions v of |grad L(x + h v) - grad L(x)| per sample (B,):
    a finite-difference estimate of the input Hessian's action, h times |H v|."""
    base = _input_grad(loss_fn, x)
    total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for _ in range(probes):
        v = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x.device, x.dtype) * 2 - 1
        total += (_input_grad(loss_fn, x + h * v) - base).flatten(1).norm(dim=1).double()
    return (total / probes).float()


def network_loss(net: torch.nn.Module, y: Tensor) -> LossFn:
    """Per-sample cross-entropy of the network's final classifier for labels ``y``."""
    return lambda x: F.cross_entropy(net(x).logits.float(), y, reduction="none")


# ----------------------------------------------------------------------------- prediction depth


def layer_features(net: CifarResNet, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """(pooled representation after the stem and after every residual unit, each (B, C); the final
    logits): what the k-NN probes of prediction depth read."""
    net = unwrap(net)
    feats: list[Tensor] = []
    hooks = [net.stages[0].first.register_forward_pre_hook(lambda m, a: feats.append(a[0].float().mean((2, 3))))]
    for stage in net.stages:
        for unit in [stage.first, *stage.rest]:
            hooks.append(unit.register_forward_hook(lambda m, a, out: feats.append(out.float().mean((2, 3)))))
    try:
        logits = net(x).logits
    finally:
        for hk in hooks:
            hk.remove()
    return feats, logits


def knn_predict(
    query: Tensor, reference: Tensor, ref_labels: Tensor, k: int, num_classes: int, self_index: Tensor | None = None
) -> Tensor:
    """The majority label among each query's k nearest reference points (Euclidean; ties go to the
    lower class). ``self_index``: each query's own position in ``reference`` (-1: none), excluded."""
    d = torch.cdist(query.double(), reference.double())
    if self_index is not None:
        own = self_index >= 0
        d[own.nonzero().squeeze(1), self_index[own]] = torch.inf
    nearest = d.topk(k, largest=False).indices
    votes = F.one_hot(ref_labels[nearest], num_classes).sum(1)
    return votes.argmax(1)


def depth_from_probes(probe_preds: Tensor, final_pred: Tensor) -> Tensor:
    """(L, N) probe predictions per layer and the final prediction (N,) -> the earliest layer from
    which every probe agrees with the final prediction (L when the last one does not)."""
    agree = (probe_preds == final_pred[None, :]).int()
    # counted from the last layer backwards: how many layers in a row, ending at the last, agree
    trailing = torch.cumprod(torch.flip(agree, [0]), 0).sum(0)
    return len(probe_preds) - trailing


def prediction_depth(
    query_feats: list[Tensor],
    final_pred: Tensor,
    ref_feats: list[Tensor],
    ref_labels: Tensor,
    num_classes: int,
    k: int = KNN_K,
    self_index: Tensor | None = None,
    chunk: int = 1024,
    progress: str | None = None,
) -> Tensor:
    """Prediction depth of every query sample (N,), in layers (0 = stem) from its representations at
    every layer (``query_feats``, each (N, C)) against the reference set's (``ref_feats``); with a
    progress bar of that name where ``progress`` names one."""
    from tqdm import tqdm

    preds = []
    n = len(final_pred)
    with tqdm(total=n * len(query_feats), desc=progress, unit="img", disable=progress is None) as bar:
        for q, r in zip(query_feats, ref_feats):
            parts = []
            for a in range(0, len(q), chunk):
                own = self_index[a : a + chunk] if self_index is not None else None
                parts.append(knn_predict(q[a : a + chunk], r, ref_labels, k, num_classes, own))
                bar.update(len(parts[-1]))
            preds.append(torch.cat(parts))
    return depth_from_probes(torch.stack(preds), final_pred)


def gather_features(net: CifarResNet, batches: Iterable[Tensor], n: int) -> tuple[list[Tensor], Tensor]:
    """Every layer's pooled representation and the final prediction over ``batches`` of ``n`` images
    in all (on the CPU). The outputs are allocated once and filled: small tensors kept between each
    batch's large freed ones fragment glibc's heap (10k images held 1.6 GB this way)."""
    per_layer: list[Tensor] = []
    preds = torch.empty(n, dtype=torch.long)
    at = 0
    with torch.no_grad():
        for x in batches:
            if at + len(x) > n:
                raise ValueError(f"gather_features: the batches hold more than {n} images")
            feats, logits = layer_features(net, x)
            per_layer = per_layer or [torch.empty(n, f.shape[1]) for f in feats]
            for store, f in zip(per_layer, feats):
                store[at : at + len(x)] = f.cpu()
            preds[at : at + len(x)] = logits.argmax(1).cpu()
            at += len(x)
    if at != n:
        raise ValueError(f"gather_features: the batches hold {at} images, not {n}")
    return per_layer, preds


def proxies_of_batch(
    net: CifarResNet, x: Tensor, y: Tensor, probes: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Curvature and loss sensitivity of one (normalised images, labels) batch, float32 (B,)."""
    net.eval()
    fn = network_loss(net, y)
    return {"curvature": curvature(fn, x, probes, generator=generator), "loss_sensitivity": loss_sensitivity(fn, x)}


# ----------------------------------------------------------------------------- a run's proxies


PROXY_BATCH = 256


def _batches(r, images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[Tensor, Tensor]]:
    """The (normalised images, labels) batches of a set, normalised as each is needed (all of them
    at once would hold 12 KB of float32 per 32x32 image)."""
    from ..train.evaluate import normalize

    for a in range(0, len(images), PROXY_BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[a : a + PROXY_BATCH])).to(r.device)
        y = torch.from_numpy(labels[a : a + PROXY_BATCH].astype(np.int64))
        yield normalize(x, r.data.mean, r.data.std), y


def run_proxies(
    r, sets: dict[str, tuple[np.ndarray, np.ndarray]], probes: int, snapshots: list, progress: bool = False
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Per set ("train" is the probes' reference and leaves each sample out of its own vote): the final
    network's prediction depth, and curvature and loss sensitivity averaged over the run's
    ``snapshots`` (checkpoint paths) and the final network. Returns them and the seconds each took."""
    import time

    from ..train import checkpoint as ckpt_io

    t = time.perf_counter()
    out = _depths(r, sets, progress)
    cost = {"prediction_depth": time.perf_counter() - t}
    nets = [r.net]
    for path in snapshots:
        net = build_model(r.cfg.model, r.cfg.gate)
        ckpt_io.load_model_state(net, ckpt_io.load(path), path)
        nets.append(net.to(r.device).eval())
    t = time.perf_counter()
    for k, found in _averaged_over(nets, r, sets, probes, progress).items():
        out[k].update(found)
    cost["curvature_and_sensitivity"] = time.perf_counter() - t
    return out, cost


def _depths(r, sets: dict[str, tuple[np.ndarray, np.ndarray]], progress: bool) -> dict[str, dict[str, np.ndarray]]:
    """Prediction depth of every set's images under the final network, the training set as reference."""
    feats = {k: gather_features(r.net.eval(), (x for x, _ in _batches(r, *xy)), len(xy[0])) for k, xy in sets.items()}
    ref, ref_labels = feats["train"][0], torch.from_numpy(sets["train"][1].astype(np.int64))
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, (f, pred) in feats.items():
        own = torch.arange(len(pred)) if k == "train" else None
        name = f"prediction depth ({k})" if progress else None
        depth = prediction_depth(f, pred, ref, ref_labels, r.cfg.model.num_classes, self_index=own, progress=name)
        out[k] = {"prediction_depth": depth.numpy().astype(np.int16)}  # layers: ResNet-1202's 601 fit
    return out


def _averaged_over(
    nets: list[CifarResNet], r, sets: dict[str, tuple[np.ndarray, np.ndarray]], probes: int, progress: bool
) -> dict[str, dict[str, np.ndarray]]:
    """Curvature and loss sensitivity of every set's images, averaged over ``nets``, float32. The sums
    are allocated once and filled batch by batch (see ``gather_features`` on the heap)."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(0)
    sums = {k: {name: np.zeros(len(x)) for name in ("curvature", "loss_sensitivity")} for k, (x, _) in sets.items()}
    steps = len(nets) * sum(-(-len(x) // PROXY_BATCH) for x, _ in sets.values())
    with tqdm(total=steps, desc="curvature", disable=not progress) as bar:
        for net in nets:
            for k, xy in sets.items():
                for i, (x, y) in enumerate(_batches(r, *xy)):  # one batch at a time, so that the bar moves
                    at = slice(i * PROXY_BATCH, i * PROXY_BATCH + len(y))
                    for name, v in proxies_of_batch(net, x, y, probes, gen).items():
                        sums[k][name][at] += v.cpu().double().numpy()
                    bar.update(1)
    return {k: {name: (v / len(nets)).astype(np.float32) for name, v in found.items()} for k, found in sums.items()}

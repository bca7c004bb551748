"""Training the learned renderer: losses that need no pretrained network, and the loop.

Losses: L1 on colours, L1 on image gradients at three scales (edges and
texture, which L1 alone blurs), and 1 - SSIM (local contrast/structure; a
weight-free stand-in for the paper's perceptual loss, as no pretrained
network can be downloaded here).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gdyn_backend.errors import UserError
from gdyn_backend.render.default import importance_from_weights
from gdyn_backend.render.learned.data import Triple
from gdyn_backend.render.learned.network import RendererConfig, RendererNet


def _ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda a: F.avg_pool2d(a, 7, 1, 3, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    sxx, syy, sxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + multi-scale gradient L1 (scales 1, 1/2, 1/4) + 0.2 (1 - SSIM); no pretrained net."""
    loss = (pred - target).abs().mean()
    p, t = pred, target
    for _ in range(3):
        for dim in (-1, -2):
            loss = loss + 0.5 * (p.diff(dim=dim) - t.diff(dim=dim)).abs().mean()
        p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
    return loss + 0.2 * (1.0 - _ssim_map(pred, target)).mean()


def batch_tensors(triples: Sequence[Triple], crop: tuple[int, int] | None, sharpness: float,
                  rng: np.random.Generator, device) -> tuple[torch.Tensor, ...]:
    """The network's inputs and target for `triples`, cropped at random places.

    crop: (width, height) pixels, or None for whole frames (one size for all).
    Returns still [B, 3, h, w] 0..1, target [B, 3, h, w] 0..1, flow
    [B, 2, h, w] pixels and importance [B, 1, h, w] (softmax logits).
    """
    starts, targets, flows, zs = [], [], [], []
    for tr in triples:
        h, w = tr.start.shape[:2]
        ch, cw = (min(crop[1], h), min(crop[0], w)) if crop else (h, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        starts.append(np.moveaxis(tr.start[win], 2, 0))
        targets.append(np.moveaxis(tr.target[win], 2, 0))
        flows.append(tr.flow[(slice(None),) + win])
        zs.append(importance_from_weights(tr.weights[win], sharpness)[None])
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a), np.float32)).to(device)  # noqa: E731
    return as_t(starts), as_t(targets), as_t(flows), as_t(zs)


def train(triples: Sequence[Triple], config: RendererConfig = RendererConfig(), *, steps: int = 1000,
          batch_size: int = 4, learning_rate: float = 1e-3, crop: tuple[int, int] | None = (128, 128),
          seed: int = 0, device: str | torch.device = "cpu", progress=None,
          model: RendererNet | None = None) -> tuple[RendererNet, list[float]]:
    """Train (or continue training `model`) on triples; returns the model and per-step losses.

    crop: (width, height) random crop per example, or None for whole frames
          (all triples must then have one size).
    """
    if not triples:
        raise UserError("no training examples for the renderer")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = (model or RendererNet(config)).to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    if progress is not None:
        progress.start("training", steps)
    for _ in range(steps):
        pick = rng.integers(0, len(triples), batch_size)
        still, target, flow, z = batch_tensors([triples[i] for i in pick], crop, model.config.sharpness, rng, device)
        loss = reconstruction_loss(model(still, flow, z), target)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.advance()
    return model.eval(), losses

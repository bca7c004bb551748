"""Rendering frames with a trained network: `LearnedRenderer`."""

from __future__ import annotations

import numpy as np
import torch

from gdyn_backend.device import torch_device
from gdyn_backend.render.default import DefaultRenderer, importance_from_weights
from gdyn_backend.render.learned.checkpoint import load_checkpoint
from gdyn_backend.render.learned.network import RendererNet


class LearnedRenderer:
    """Same contract as `DefaultRenderer.render`; the still is encoded once."""

    def __init__(self, model: RendererNet, device: str | torch.device | None = None):
        self.device = torch_device(device)
        self.model = model.to(self.device).eval()
        cfg = model.config
        self.base = DefaultRenderer(cfg.sharpness, cfg.background_bias, self.device)
        self._inputs: tuple = ()
        self._feats: list[torch.Tensor] = []
        self._importance = None

    @classmethod
    def from_checkpoint(cls, path, device=None) -> "LearnedRenderer":
        model, _ = load_checkpoint(path)
        return cls(model, device)

    @torch.no_grad()
    def render(self, rgb: np.ndarray, alpha: np.ndarray | None, displacement: np.ndarray,
               weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """rgb [H, W, 3], alpha [H, W] or None, displacement [2, H, W] px, weights [H, W] px."""
        if not (len(self._inputs) == 2 and self._inputs[0] is rgb and self._inputs[1] is weights):
            still = torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, 2, 0))).to(self.device)[None]
            self._feats = self.model.encode(still)
            z = importance_from_weights(weights, self.model.config.sharpness)
            self._importance = torch.from_numpy(z).to(self.device)[None, None]
            self._inputs = (rgb, weights)
        base_rgb, base_alpha = self.base.render(rgb, alpha, displacement, weights)
        base = torch.from_numpy(np.ascontiguousarray(np.moveaxis(base_rgb, 2, 0))).to(self.device)[None]
        flow = torch.from_numpy(np.ascontiguousarray(displacement, np.float32)).to(self.device)[None]
        out = self.model.synthesize(self._feats, base, flow, self._importance).clamp_(0.0, 1.0)
        return np.ascontiguousarray(np.moveaxis(out[0].cpu().numpy(), 0, 2)), base_alpha

"""The learned renderer's network (paper §5, fig. 4) and its configuration.

`RendererNet`:
  encoder   the still -> features at scales 1, 1/2, 1/4, ... (`channels`);
  splatting every scale's features forward-warped by the frame's flow
            (resized and rescaled to that scale) with `splat.softmax_splat`,
            using the same motion weights W(p) = mean_t |F_t(p)| as the
            default renderer (paper: motion-derived, not learned, weights);
  decoder   coarse to fine, each level takes the upsampled coarser result,
            the warped features and their coverage (where the holes are);
            by default its output is a residual added to the default
            renderer's frame (splat + push-pull fill) and the last layer
            starts at zero, so an untrained network renders exactly like the
            default renderer and training only learns corrections
            (`residual = False` gives the paper's plain synthesis network).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gdyn_backend.render.default import render_batch
from gdyn_backend.render.splat import softmax_splat


@dataclass(frozen=True)
class RendererConfig:
    """Architecture and the weighting it was trained with (saved in the checkpoint).

    channels:        feature channels per scale, finest first (scale 1, 1/2, ...).
    sharpness, background_bias: the default renderer's settings (importance
                     scale and hole-fill preference), used for the base frame.
    residual:        True: the output is the default renderer's frame plus a
                     learned correction that starts at zero; False: the
                     paper's plain synthesis network, trained from scratch.
    """

    channels: tuple[int, ...] = (24, 48, 96)
    sharpness: float = 5.0
    background_bias: float = 10.0
    residual: bool = True

    @classmethod
    def from_json(cls, text: str) -> "RendererConfig":
        data = json.loads(text)
        data["channels"] = tuple(int(c) for c in data["channels"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


TINY_CONFIG = RendererConfig(channels=(8, 16, 24))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.PReLU(cout))


class RendererNet(nn.Module):
    """Feature pyramid encoder + softmax splatting + synthesis decoder (see module doc)."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        self.encoder = nn.ModuleList(
            [_block(3, ch[0])] + [_block(ch[j - 1], ch[j], stride=2) for j in range(1, len(ch))])
        # decoder level j sees: warped features (ch[j]) + coverage (1) + coarser output
        self.decoder = nn.ModuleList()
        for j in range(len(ch)):
            coarser = ch[j + 1] if j + 1 < len(ch) else 0
            extra = 3 if j == 0 and config.residual else 0  # the default renderer's frame
            self.decoder.append(_block(ch[j] + 1 + coarser + extra, ch[j]))
        self.head = nn.Conv2d(ch[0], 3, 3, 1, 1)
        if config.residual:  # start as the default renderer
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def encode(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """rgb [B, 3, H, W] 0..1 -> features, finest first."""
        feats, x = [], rgb * 2.0 - 1.0
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        return feats

    def synthesize(self, feats: Sequence[torch.Tensor], base: torch.Tensor, flow: torch.Tensor,
                   importance: torch.Tensor) -> torch.Tensor:
        """Frame [B, 3, H, W] (unclamped) from encoded features of the still.

        base: the default renderer's frame [B, 3, H, W] (used when `residual`);
        flow [B, 2, H, W] pixels
        of full scale; importance [B, 1, H, W] softmax logits.
        """
        h, w = flow.shape[-2:]
        warped = []
        for f in feats:
            fh, fw = f.shape[-2:]
            if (fh, fw) == (h, w):
                fl, z = flow, importance
            else:
                scale = torch.tensor([fw / w, fh / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
                fl = F.interpolate(flow, size=(fh, fw), mode="bilinear", align_corners=False) * scale
                z = F.adaptive_max_pool2d(importance, (fh, fw))
            warped.append(softmax_splat(f, fl, z))
        x = None
        for j in range(len(feats) - 1, -1, -1):
            out, coverage = warped[j]
            parts = [out, coverage.clamp(max=1.0)]
            if x is not None:
                parts.append(F.interpolate(x, size=out.shape[-2:], mode="bilinear", align_corners=False))
            if j == 0 and self.config.residual:
                parts.append(base * 2.0 - 1.0)
            x = self.decoder[j](torch.cat(parts, dim=1))
        if self.config.residual:
            return base + self.head(x)
        return 0.5 * (self.head(x) + 1.0)

    def forward(self, still: torch.Tensor, flow: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
        """still [B, 3, H, W], flow [B, 2, H, W], importance [B, 1, H, W] -> [B, 3, H, W]."""
        cfg = self.config
        base = render_batch(still, flow, importance, cfg.sharpness, cfg.background_bias) if cfg.residual else None
        return self.synthesize(self.encode(still), base, flow, importance)

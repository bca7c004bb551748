"""Variational autoencoder for normalized spectral maps (paper §4.2, §7.1).

Each frequency band's map is one image: a [K, 4, H, W] volume is encoded as
K independent 4-channel maps [K, 4, H, W] -> latents [K, 4, H/f, W/f] with a
continuous (Gaussian) latent of 4 channels, f = 2 ** (len(channel_mult) - 1).
Inputs are the frequency-adaptively normalized coefficients of eq. 4
(`spectral.FrequencyNormalizer`), so values are mostly within [-1, 1].

Loss (§7.1): L1 reconstruction + 0.2 x multi-scale gradient consistency
(Li & Snavely, MegaDepth) + 1e-6 x KL divergence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gdyn_backend.model.layers import Downsample, ResBlock, SpatialSelfAttention, Upsample, group_norm

L1_WEIGHT, GRADIENT_WEIGHT, KL_WEIGHT = 1.0, 0.2, 1e-6
GRADIENT_SCALES = 4


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the autoencoder; saved as JSON beside the weights."""

    in_channels: int = 4          # Re x, Im x, Re y, Im y of one band
    latent_channels: int = 4      # the paper's continuous latent of dimension 4
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4)   # downsampling factor 2 ** (len - 1)
    num_res_blocks: int = 2
    mid_attention: bool = True

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        d = dict(d)
        d["channel_mult"] = tuple(d["channel_mult"])
        return cls(**d)


VAE_CONFIGS = {
    "tiny": VAEConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False),  # CI tests
    "paper": VAEConfig(),  # the LDM KL-f4 autoencoder's shape
}


class _Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch, 3, padding=1)]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, cfg.base_channels * mult))
                ch = cfg.base_channels * mult
            if level < len(cfg.channel_mult) - 1:
                layers.append(Downsample(ch))
        layers.append(ResBlock(ch, ch))
        if cfg.mid_attention:
            layers.append(SpatialSelfAttention(ch))
        layers += [ResBlock(ch, ch), group_norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class _Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.base_channels * cfg.channel_mult[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(ch, ch)]
        if cfg.mid_attention:
            layers.append(SpatialSelfAttention(ch))
        layers.append(ResBlock(ch, ch))
        for level in reversed(range(len(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock(ch, cfg.base_channels * cfg.channel_mult[level]))
                ch = cfg.base_channels * cfg.channel_mult[level]
            if level > 0:
                layers.append(Upsample(ch))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def forward(self, z, size):
        h = self.conv_in(z)
        ups = [m for m in self.layers if isinstance(m, Upsample)]
        for m in self.layers:
            if isinstance(m, Upsample):
                # the last upsample restores the exact input size (odd sizes round up on the way down)
                h = m(h, size if m is ups[-1] else None)
            else:
                h = m(h)
        return self.out(h)


class SpectralVAE(nn.Module):
    """Encoder/decoder of one band's normalized map [N, 4, H, W] <-> latent [N, 4, h, w]."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent of an H x W map."""
        for _ in range(len(self.config.channel_mult) - 1):
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, logvar), each [N, latent_channels, h, w]."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Map [N, 4, H, W] (normalized units) from latent [N, 4, h, w]; size = (H, W)."""
        return self.decoder(z, size)

    def forward(self, x: torch.Tensor, sample: bool = True, noise: torch.Tensor | None = None):
        """Reconstruction [N, 4, H, W], posterior mean and logvar.

        sample: decode z = mean + noise * std (reparameterised) instead of the mean;
        noise:  its standard normal draws [N, latent_channels, h, w] (default: fresh ones).
        """
        mean, logvar = self.encode(x)
        if sample:
            noise = torch.randn_like(mean) if noise is None else noise
            z = mean + noise * torch.exp(0.5 * logvar)
        else:
            z = mean
        return self.decode(z, x.shape[-2:]), mean, logvar


def gradient_consistency(recon: torch.Tensor, target: torch.Tensor, scales: int = GRADIENT_SCALES) -> torch.Tensor:
    """Multi-scale gradient matching loss: mean |d/dx R| + |d/dy R| of R = recon - target
    at 1, 1/2, 1/4, ... resolution (average pooling), averaged over scales."""
    r = recon - target
    total = r.new_zeros(())
    used = 0
    for s in range(scales):
        if min(r.shape[-2:]) < 2:
            break
        total = total + (r[..., :, 1:] - r[..., :, :-1]).abs().mean() + (r[..., 1:, :] - r[..., :-1, :]).abs().mean()
        used += 1
        r = F.avg_pool2d(r, 2, ceil_mode=True)
    return total / max(used, 1)


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
    """The §7.1 loss and its parts: {'loss', 'l1', 'gradient', 'kl'}.

    KL is summed over latent elements and averaged over the N maps (LDM convention).
    """
    l1 = (recon - x).abs().mean()
    grad = gradient_consistency(recon, x)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
    return {"loss": L1_WEIGHT * l1 + GRADIENT_WEIGHT * grad + KL_WEIGHT * kl, "l1": l1, "gradient": grad, "kl": kl}

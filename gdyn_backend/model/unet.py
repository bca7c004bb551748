"""The frequency-coordinated denoiser (paper §4.2, Fig. 3).

An LDM-style 2D U-Net (ResBlocks, spatial self-attention at the lower
resolutions) sees every frequency band of every sample as its own map: the
noisy latents [B, K, C, h, w] become B*K maps, and each gets the diffusion
time embedding plus a learned embedding of its band index k. The start image,
downsampled to the latent size, is concatenated to the noisy latent together
with one constant flag channel (1 = conditioned, 0 = the null condition of
classifier-free guidance, whose image is all zeros).

Frequency attention layers (on when `UNetConfig.frequency_attention`) follow
every spatial block: they reshape (B*K, C, h, w) -> (B, K, C, h, w) and
attend across the K bands at each latent pixel. Their output projection is
zero-initialised, so a stage-2 model starts exactly at the stage-1 model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from gdyn_backend.model.layers import (Downsample, ResBlock, SpatialSelfAttention, Upsample, group_norm,
                                       timestep_embedding, zero_module)

IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the denoiser; saved as JSON beside the weights."""

    latent_channels: int = 4
    num_bands: int = 16
    model_channels: int = 224
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2, 3)   # levels (0 = full latent res) with spatial attention
    head_channels: int = 32
    dropout: float = 0.0
    frequency_attention: bool = False

    @property
    def in_channels(self) -> int:
        return self.latent_channels + IMAGE_CHANNELS + 1  # noisy latent, image, condition flag

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["channel_mult"] = tuple(d["channel_mult"])
        d["attention_levels"] = tuple(d["attention_levels"])
        return cls(**d)

    def with_frequency_attention(self, on: bool = True) -> "UNetConfig":
        return replace(self, frequency_attention=on)


UNET_CONFIGS = {
    # CI tests: milliseconds on a CPU. 24 channels, not 16: at 16 it could not produce its overfitted
    # pair's latent from the image alone at the highest noise levels (n >= 950; x0 error ~80 %).
    "tiny": UNetConfig(model_channels=24, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                       head_channels=8),
    # The LDM paper's 2D U-Net at its 64x64-latent size (LSUN/CelebA-HQ configs):
    # 224 channels, mult (1, 2, 3, 4), 2 res blocks, attention at 1/2, 1/4, 1/8.
    "paper": UNetConfig(),
}


class FrequencyAttention(nn.Module):
    """Self-attention across the K bands at each pixel: [B*K, C, h, w] -> same, residual.

    A learned band position embedding [K, C] tells the tokens apart; the output
    projection starts at zero (identity layer).
    """

    def __init__(self, channels: int, num_bands: int, head_channels: int = 32):
        super().__init__()
        self.num_bands = num_bands
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.band_position = nn.Parameter(torch.randn(num_bands, channels) * 0.02)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.num_bands
        b = n // k
        tokens = self.norm(x).reshape(b, k, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, k, c)
        tokens = tokens + self.band_position.to(tokens.dtype)
        q, kk, v = self.qkv(tokens).reshape(b * h * w, k, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(b * h * w, k, c)
        a = self.out(a).reshape(b, h * w, k, c).permute(0, 2, 3, 1).reshape(n, c, h, w)
        return x + a


class UNetBlock(nn.Module):
    """One U-Net step: optional ResBlock, spatial attention, frequency attention and
    resampling, in that order. Named children keep weight names the same whether
    or not the frequency attention exists (stage 1 -> stage 2 loading)."""

    def __init__(self, res: nn.Module | None = None, attn: nn.Module | None = None,
                 freq: nn.Module | None = None, resample: nn.Module | None = None):
        super().__init__()
        self.res, self.attn, self.freq, self.resample = res, attn, freq, resample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, up_size=None) -> torch.Tensor:
        if self.res is not None:
            h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.freq is not None:
            h = self.freq(h)
        if isinstance(self.resample, Upsample):
            h = self.resample(h, up_size)
        elif self.resample is not None:
            h = self.resample(h)
        return h


class MotionUNet(nn.Module):
    """eps_theta(z_n; n, c): predicts the noise of all K bands of B samples."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc = cfg.model_channels
        emb_dim = 4 * mc
        self.time_mlp = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.band_embedding = nn.Embedding(cfg.num_bands, emb_dim)

        def spatial_block(cin, cout, level, resample=None):
            return UNetBlock(
                ResBlock(cin, cout, emb_dim, cfg.dropout),
                SpatialSelfAttention(cout, cfg.head_channels) if level in cfg.attention_levels else None,
                FrequencyAttention(cout, cfg.num_bands, cfg.head_channels) if cfg.frequency_attention else None,
                resample)

        self.conv_in = nn.Conv2d(cfg.in_channels, mc, 3, padding=1)
        self.input_blocks = nn.ModuleList()
        skips, ch = [mc], mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.input_blocks.append(spatial_block(ch, mc * mult, level))
                ch = mc * mult
                skips.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetBlock(resample=Downsample(ch)))
                skips.append(ch)
        self.middle_block = nn.ModuleList([
            UNetBlock(ResBlock(ch, ch, emb_dim, cfg.dropout), SpatialSelfAttention(ch, cfg.head_channels),
                      FrequencyAttention(ch, cfg.num_bands, cfg.head_channels) if cfg.frequency_attention else None),
            UNetBlock(ResBlock(ch, ch, emb_dim, cfg.dropout))])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out_ch = mc * cfg.channel_mult[level]
                up = Upsample(out_ch) if level > 0 and i == cfg.num_res_blocks else None
                self.output_blocks.append(spatial_block(ch + skips.pop(), out_ch, level, up))
                ch = out_ch
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, cfg.latent_channels, 3, padding=1)))

    def frequency_attention_parameters(self) -> list[nn.Parameter]:
        """Parameters of the frequency attention layers (the only ones trained in stage 2)."""
        return [p for m in self.modules() if isinstance(m, FrequencyAttention) for p in m.parameters()]

    def forward(self, z: torch.Tensor, t: torch.Tensor, image: torch.Tensor,
                conditioned: torch.Tensor) -> torch.Tensor:
        """Predicted noise [B, K, C, h, w].

        z:           noisy latents [B, K, C, h, w] (K = config.num_bands).
        t:           diffusion step per sample [B] (0..N-1).
        image:       start image at latent size [B, 3, h, w] in [-1, 1].
        conditioned: [B] bool/float; 0 replaces the image by the null condition.
        """
        b, k, c, h, w = z.shape
        if k != self.config.num_bands:
            raise ValueError(f"model has {self.config.num_bands} bands, got {k}")
        flag = conditioned.to(z.dtype).reshape(b, 1, 1, 1)
        cond = torch.cat([image.to(z.dtype) * flag, flag.expand(b, 1, h, w)], dim=1)
        x = torch.cat([z, cond[:, None].expand(b, k, -1, h, w)], dim=2).reshape(b * k, -1, h, w)
        bands = torch.arange(k, device=z.device).repeat(b)
        emb = self.time_mlp(timestep_embedding(t.repeat_interleave(k), self.config.model_channels))
        emb = emb + self.band_embedding(bands)
        hx = self.conv_in(x)
        hs = [hx]
        for block in self.input_blocks:
            hx = block(hx, emb)
            hs.append(hx)
        for block in self.middle_block:
            hx = block(hx, emb)
        for block in self.output_blocks:
            hx = block(torch.cat([hx, hs.pop()], dim=1), emb, hs[-1].shape[-2:] if hs else None)
        return self.out(hx).reshape(b, k, c, h, w)


def condition_image(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Start images [B, 3, H, W] in [-1, 1] downsampled (area averaging) to the latent size (h, w)."""
    return F.interpolate(images, size=tuple(size), mode="area")


def load_stage_one(model: MotionUNet, state: dict[str, torch.Tensor]) -> None:
    """Load stage-1 (no frequency attention) weights into `model`; only the
    frequency attention layers may be missing from `state`."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    names = {n for n, m in model.named_modules() if isinstance(m, FrequencyAttention)}
    bad = [m for m in missing if not any(m.startswith(n + ".") for n in names)]
    if bad or unexpected:
        raise ValueError(f"weights do not fit this U-Net: missing {bad[:3]}, unexpected {list(unexpected)[:3]}")

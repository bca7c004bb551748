"""Learned image-based renderer (paper §5, fig. 4): feature pyramid + softmax splatting.

Network (`RendererNet`):
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

Training (`train`) uses (start frame, target frame, forward flow, W) triples:
from videos via `gdyn_backend.flow` (`gdyn train renderer VIDEOS -o F`) or
from synthetic clips with known flow (tests). Losses need no pretrained
network (none can be downloaded here): L1 on colours, L1 on image gradients
at three scales (edges and texture, which L1 alone blurs), and 1 - SSIM
(local contrast/structure; a weight-free stand-in for perceptual losses).

Checkpoints are safetensors: the weights as tensors, and the config
dataclass as JSON in the metadata (`config`), beside `format =
gdyn-renderer`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gdyn_backend.device import torch_device
from gdyn_backend.errors import UserError
from gdyn_backend.io import atomic_path, read_safetensors
from gdyn_backend.render.default import DefaultRenderer, importance_from_weights, render_batch
from gdyn_backend.render.splat import softmax_splat

FORMAT_NAME = "gdyn-renderer"
FORMAT_VERSION = "1"


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


# ---------------------------------------------------------------------------
# Checkpoints


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted.

    safetensors 0.8 writes metadata in hash-map order, which changes from
    call to call; sorting makes equal checkpoints byte-identical files.
    Data offsets are relative to the end of the header, so they still hold.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    return len(text).to_bytes(8, "little") + text + blob[8 + size:]


def save_checkpoint(model: RendererNet, path, extra: dict[str, str] | None = None) -> Path:
    """Weights as safetensors + config JSON in the metadata; appears whole or not at all.

    The file is a deterministic function of the weights and metadata.
    """
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_json()}
    meta.update(extra or {})
    with atomic_path(path) as tmp:
        tmp.write_bytes(_canonical_header(save(tensors, meta)))
    return path


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[RendererNet, dict[str, str]]:
    """The network of a renderer checkpoint (eval mode) and its metadata; UserError if invalid."""
    path = Path(path)
    tensors, meta = read_safetensors(path, FORMAT_NAME, "renderer checkpoint",
                                     "train one with `gdyn train renderer`", framework="pt")
    try:
        model = RendererNet(RendererConfig.from_json(meta["config"]))
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: renderer checkpoint does not match its config "
                        f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------
# Rendering frames


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


# ---------------------------------------------------------------------------
# Training


@dataclass
class Triple:
    """One training example (numpy, float32).

    start, target: [H, W, 3] 0..1 frames; flow: [2, H, W] forward flow from
    start to target in pixels; weights: [H, W] W(p) = mean_t |F_t(p)| of the
    window the pair came from, pixels.
    """

    start: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    weights: np.ndarray


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


def _batch(triples: Sequence[Triple], crop: tuple[int, int] | None, sharpness: float,
           rng: np.random.Generator, device) -> tuple[torch.Tensor, ...]:
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
        still, target, flow, z = _batch([triples[i] for i in pick], crop, model.config.sharpness, rng, device)
        loss = reconstruction_loss(model(still, flow, z), target)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.advance()
    return model.eval(), losses


def triples_from_video(path, width: int, height: int, window: int = 30, pairs_per_window: int = 6,
                       max_windows: int = 8) -> Iterator[Triple]:
    """Training triples from one video or image folder, flow measured by `gdyn_backend.flow`.

    Frames are resized to width x height; each window of `window` frames gives
    `pairs_per_window` (frame 0 -> frame t) pairs, t spread over the window,
    with W = mean over the window's flows of |F_t| (as for a spectral volume).
    """
    import cv2

    from gdyn_backend.flow import DenseFlow, to_gray
    from gdyn_backend.io import open_video

    _, frames = open_video(path)
    flow = DenseFlow()
    buffer: list[np.ndarray] = []
    done = 0
    for frame in frames:
        buffer.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
        if len(buffer) < window:
            continue
        gray0 = to_gray(buffer[0], width, height)
        flows = [flow(gray0, to_gray(f, width, height)) for f in buffer[1:]]
        weights = np.mean([np.sqrt((f ** 2).sum(axis=0)) for f in flows], axis=0).astype(np.float32)
        for t in np.linspace(1, window - 1, pairs_per_window).round().astype(int):
            yield Triple(buffer[0], buffer[t], flows[t - 1], weights)
        buffer, done = [], done + 1
        if done >= max_windows:
            return


# ---------------------------------------------------------------------------
# `gdyn train renderer`


def add_train_arguments(parser) -> None:
    """Options of `gdyn train renderer` (the CLI module wires them)."""
    parser.add_argument("videos", type=Path,
                        help="folder of training videos (.mp4/.mov/...) or of image-sequence folders")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CHECKPOINT",
                        help="renderer checkpoint to write (.safetensors)")
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps (default: 5000)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (default: 8)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--size", default="256x160", help="training resolution WxH (default: 256x160)")
    parser.add_argument("--crop", default="128x128", help="random crop WxH per example (default: 128x128)")
    parser.add_argument("--window", type=int, default=30, help="frames per flow window (default: 30)")
    parser.add_argument("--tiny", action="store_true", help="a very small network (tests, smoke runs)")
    parser.add_argument("--plain", action="store_true",
                        help="the paper's plain synthesis network instead of a learned correction "
                             "on top of the default renderer")
    parser.add_argument("--resume", type=Path, metavar="CHECKPOINT", help="continue from a checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")


def _size(text: str, option: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{option} must look like 256x160, got {text!r}") from None
    if w < 16 or h < 16:
        raise UserError(f"{option} must be at least 16x16, got {text}")
    return w, h


VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}


def train_from_args(args) -> int:
    """Run `gdyn train renderer` from parsed arguments; returns the exit status."""
    from gdyn_backend.progress import Progress, terminal_bar

    width, height = _size(args.size, "--size")
    crop = _size(args.crop, "--crop")
    if args.steps < 1 or args.batch_size < 1:
        raise UserError("--steps and --batch-size must be at least 1")
    folder = Path(args.videos)
    if not folder.is_dir():
        raise UserError(f"training videos folder not found: {folder}")
    sources = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
    if not sources:
        raise UserError(f"{folder} holds no videos or image-sequence folders")
    progress = Progress(terminal_bar())
    progress.start("flow", len(sources))
    triples: list[Triple] = []
    for src in sources:
        triples.extend(triples_from_video(src, width, height, args.window))
        progress.advance()
    if not triples:
        raise UserError(f"no video in {folder} has {args.window} frames; use a smaller --window")
    model = None
    if args.resume is not None:
        model, _ = load_checkpoint(args.resume)
    device = torch_device(args.device)
    config = replace(TINY_CONFIG if args.tiny else RendererConfig(), residual=not args.plain)
    model, losses = train(triples, config, steps=args.steps,
                          batch_size=args.batch_size, learning_rate=args.lr, crop=crop,
                          seed=args.seed, device=device, progress=progress, model=model)
    tail = losses[-min(50, len(losses)):]
    save_checkpoint(model, args.output, {"steps": str(len(losses)), "final_loss": f"{np.mean(tail):.6f}",
                                         "examples": str(len(triples))})
    print(f"wrote {args.output}: {len(triples)} examples, {len(losses)} steps, "
          f"loss {np.mean(losses[:min(50, len(losses))]):.4f} -> {np.mean(tail):.4f}")
    return 0

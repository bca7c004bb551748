"""Safetensors checkpoints of the motion model (no pickle anywhere).

Two kinds of file:

* **Model file** (`format = gdyn-motion-model`), what `gdyn sample` and
  `gdyn animate --source model --checkpoint F` read. One file bundles
  everything needed to sample: tensors `vae.*`, `unet.*` (absent in a
  VAE-only file), `normalization_scales` [K] (eq. 4's s_k); string metadata
  `vae_config`, `unet_config`, `diffusion_config`, `data` (motion width,
  height, fps, period T, K as JSON), `latent_scale`, `stage`
  (vae | frequency | attention) and `step`.
* **Training state** (`format = gdyn-training-state`), for resuming: tensors
  `model.*` (the trained module), `optimizer.state.<i>.<name>` (AdamW
  moments, flattened) and metadata `step`, `optimizer_param_groups` and
  `optimizer_scalars` (JSON), `config` (JSON of the run).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gdyn_backend.errors import UserError
from gdyn_backend.io import atomic_path, read_safetensors
from gdyn_backend.model.diffusion import DiffusionConfig
from gdyn_backend.model.unet import MotionUNet, UNetConfig
from gdyn_backend.model.vae import SpectralVAE, VAEConfig
from gdyn_backend.spectral import FrequencyNormalizer, band_frequencies

MODEL_FORMAT = "gdyn-motion-model"
STATE_FORMAT = "gdyn-training-state"


@dataclass(frozen=True)
class DataInfo:
    """What the model's spectral volumes are: W x H motion pixels, fps, T frames, K bands."""

    width: int
    height: int
    fps: float
    period_frames: int
    num_bands: int

    def frequencies_hz(self) -> np.ndarray:
        return band_frequencies(self.num_bands, self.fps, self.period_frames)


@dataclass
class MotionModel:
    """A loaded (or trained) model: VAE, optional denoiser, normalization and data facts."""

    vae: SpectralVAE
    normalizer: FrequencyNormalizer
    data: DataInfo
    unet: MotionUNet | None = None
    diffusion: DiffusionConfig | None = None
    latent_scale: float = 1.0
    stage: str = "vae"
    step: int = 0


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path) -> Path:
    """Atomic safetensors write (temp name, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(_contiguous(tensors), str(tmp), metadata)
    return path


def _open(path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    what = "motion model checkpoint" if expected_format == MODEL_FORMAT else "training state"
    return read_safetensors(path, expected_format, what,
                            "train one with `gdyn train vae` / `gdyn train ldm`", framework="pt")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def save_model(model: MotionModel, path) -> Path:
    """Write the sampling bundle described in the module docstring."""
    tensors = {f"vae.{k}": v for k, v in model.vae.state_dict().items()}
    tensors["normalization_scales"] = torch.from_numpy(np.asarray(model.normalizer.scales, np.float32))
    meta = {"format": MODEL_FORMAT, "version": "1", "vae_config": json.dumps(model.vae.config.to_dict()),
            "data": json.dumps(asdict(model.data)), "latent_scale": repr(float(model.latent_scale)),
            "stage": model.stage, "step": str(int(model.step))}
    if model.unet is not None:
        tensors.update({f"unet.{k}": v for k, v in model.unet.state_dict().items()})
        meta["unet_config"] = json.dumps(model.unet.config.to_dict())
        meta["diffusion_config"] = json.dumps((model.diffusion or DiffusionConfig()).to_dict())
    return _save(tensors, meta, path)


def load_model(path, device: str | torch.device = "cpu", require_unet: bool = False) -> MotionModel:
    """Read a model file; UserError if it is not one (or has no denoiser when required)."""
    tensors, meta = _open(path, MODEL_FORMAT)
    try:
        vae = SpectralVAE(VAEConfig.from_dict(json.loads(meta["vae_config"])))
        vae.load_state_dict(_prefixed(tensors, "vae."))
        data = DataInfo(**json.loads(meta["data"]))
        unet = diffusion = None
        if "unet_config" in meta:
            unet = MotionUNet(UNetConfig.from_dict(json.loads(meta["unet_config"])))
            unet.load_state_dict(_prefixed(tensors, "unet."))
            diffusion = DiffusionConfig.from_dict(json.loads(meta["diffusion_config"]))
        normalizer = FrequencyNormalizer(tensors["normalization_scales"].numpy())
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"{path}: broken motion model file ({str(exc).splitlines()[0]})") from None
    if require_unet and unet is None:
        raise UserError(f"{path} holds only a VAE; train the denoiser with `gdyn train ldm` and "
                        "pass its model.safetensors")
    for module in (vae, unet):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    return MotionModel(vae, normalizer, data, unet, diffusion, float(meta["latent_scale"]),
                       meta.get("stage", "vae"), int(meta.get("step", 0)))


# ---------------------------------------------------------------------------
# Resumable training state


def save_training_state(path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                        config: dict) -> Path:
    """Module weights + AdamW state + step, flattened to tensors and JSON metadata."""
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, float]] = {}
    for index, entry in opt["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {"format": STATE_FORMAT, "step": str(int(step)),
            "optimizer_param_groups": json.dumps(opt["param_groups"]),
            "optimizer_scalars": json.dumps(scalars), "config": json.dumps(config)}
    return _save(tensors, meta, path)


def load_training_state(path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore what `save_training_state` wrote; returns (step, config)."""
    tensors, meta = _open(path, STATE_FORMAT)
    module.load_state_dict(_prefixed(tensors, "model."))
    state: dict[int, dict] = {}
    for key, value in _prefixed(tensors, "optimizer.state.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in json.loads(meta["optimizer_scalars"]).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["optimizer_param_groups"])})
    return int(meta["step"]), json.loads(meta["config"])

"""Renderer checkpoints: safetensors weights, the config as JSON in the metadata.

Metadata: `format = gdyn-renderer`, `version`, `config` (`RendererConfig`
as JSON) and what the trainer adds (steps, final loss, examples). Reading
never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gdyn_backend.errors import UserError
from gdyn_backend.io import atomic_path, read_safetensors
from gdyn_backend.render.learned.network import RendererConfig, RendererNet

FORMAT_NAME = "gdyn-renderer"
FORMAT_VERSION = "1"


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

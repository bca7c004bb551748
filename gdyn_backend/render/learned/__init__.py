"""Learned image-based renderer (paper §5, fig. 4): feature pyramid + softmax splatting.

Modules, in the order data flows through them:
  network     `RendererConfig` and `RendererNet`: encoder (the still ->
              features at scales 1, 1/2, 1/4, ...), softmax splatting of
              every scale by the flow with the default renderer's motion
              weights W(p) = mean_t |F_t(p)|, and a coarse-to-fine synthesis
              decoder (by default a residual on the default renderer's frame);
  checkpoint  `save_checkpoint` / `load_checkpoint`: safetensors weights with
              the config as JSON metadata (`format = gdyn-renderer`);
  inference   `LearnedRenderer`, the `DefaultRenderer.render` contract;
  data        `Triple` (start frame, target frame, flow, W) and the triples
              of a video or a folder of videos (flow by `gdyn_backend.flow`);
  training    `reconstruction_loss` (no pretrained network) and `train`.

`gdyn train renderer` (`gdyn_backend.cli.train`) runs data -> training ->
checkpoint; `gdyn animate --renderer-checkpoint` runs checkpoint -> inference.
"""

from gdyn_backend.render.learned.inference import LearnedRenderer

__all__ = ["LearnedRenderer"]

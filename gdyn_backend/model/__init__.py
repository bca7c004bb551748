"""The paper's motion model (§4.2, §6.2, §7.1): spectral VAE, frequency-coordinated
latent diffusion U-Net, DDIM sampling with classifier-free and loop guidance,
training pairs from videos, training loops and safetensors checkpoints.

Modules: `vae`, `unet` (+ `layers`), `diffusion`, `data`, `training`,
`checkpoint`. Sampling for users is `gdyn_backend.sources.model.sample_volume`.
"""

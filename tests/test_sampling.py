"""DDIM sampling, classifier-free guidance, loop self-guidance and `gdyn sample`."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from gdyn_backend import spectral
from gdyn_backend.cli import main
from gdyn_backend.io import write_png
from gdyn_backend.model.checkpoint import DataInfo, MotionModel, save_model
from gdyn_backend.model.diffusion import (
    DiffusionConfig,
    LoopGuidance,
    alphas_cumprod,
    cfg_eps,
    epsilon_fn,
    loop_seam,
    q_sample,
    sample_ddim,
    training_target,
)
from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet
from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE
from gdyn_backend.sources.model import decoder

K, W, H, FPS, T = 4, 16, 12, 16.0, 16


def random_model(seed=0) -> MotionModel:
    """A tiny untrained model; its zero-initialised layers get small random weights so outputs vary."""
    torch.manual_seed(seed)
    unet = MotionUNet(replace(UNET_CONFIGS["tiny"], num_bands=K, frequency_attention=True))
    vae = SpectralVAE(VAE_CONFIGS["tiny"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(unet.parameters()) + list(vae.parameters()):
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    for m in (unet, vae):
        m.eval().requires_grad_(False)
    scales = np.array([1.0, 2.0, 1.0, 0.5], np.float32)
    return MotionModel(vae, spectral.FrequencyNormalizer(scales), DataInfo(W, H, FPS, T, K), unet,
                       DiffusionConfig(), 1.0, "attention", 1)


def test_ddim_with_an_exact_denoiser_returns_the_data():
    x0 = torch.randn(2, K, 4, 3, 5)
    abar = alphas_cumprod(DiffusionConfig()).float()

    def oracle(z, t, image, conditioned):   # the true noise of z given x0
        a = abar[t].reshape(-1, 1, 1, 1, 1)
        return (z - a.sqrt() * x0) / (1 - a).sqrt()

    for steps in (1, 7, 50):
        out = sample_ddim(oracle, torch.randn_like(x0), torch.zeros(2, 3, 3, 5), DiffusionConfig(), steps, 0.0)
        torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
    # noising then one exact DDIM step from n = 999 lands on x0 too
    zt = q_sample(x0, torch.randn_like(x0), abar[torch.tensor([999, 999])])
    torch.testing.assert_close(sample_ddim(oracle, zt, torch.zeros(2, 3, 3, 5), DiffusionConfig(), 1, 0.0), x0,
                               rtol=1e-4, atol=1e-4)


def test_v_prediction_is_converted_to_the_true_noise():
    """A U-Net that outputs its training target v exactly becomes, through `epsilon_fn`, the
    exact eps predictor, so DDIM from pure noise returns the data."""
    cfg = DiffusionConfig(prediction="v")
    abar = alphas_cumprod(cfg).float()
    x0, noise = torch.randn(3, K, 4, 3, 5), torch.randn(3, K, 4, 3, 5)
    t = torch.tensor([0, 500, 999])
    zt = q_sample(x0, noise, abar[t])

    def v_oracle(z, t, image, conditioned):   # v of z given x0: sqrt(abar) eps - sqrt(1 - abar) x0
        a = abar[t].reshape(-1, 1, 1, 1, 1)
        return training_target(x0, (z - a.sqrt() * x0) / (1 - a).sqrt(), abar[t], "v")

    eps_fn = epsilon_fn(v_oracle, cfg)
    torch.testing.assert_close(eps_fn(zt, t, None, None), noise, rtol=1e-4, atol=1e-4)
    out = sample_ddim(eps_fn, torch.randn_like(x0), torch.zeros(3, 3, 3, 5), cfg, 10, 0.0)
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_cfg_weight_zero_is_the_conditional_model():
    model = random_model()
    z = torch.randn(2, K, 4, 6, 8)
    t = torch.tensor([900, 30])
    img = torch.rand(2, 3, 6, 8) * 2 - 1
    cond = model.unet(z, t, img, torch.ones(2))
    uncond = model.unet(z, t, img, torch.zeros(2))
    assert torch.equal(cfg_eps(model.unet, z, t, img, 0.0), cond)
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(cfg_eps(model.unet, z, t, img, 1.5), 2.5 * cond - 1.5 * uncond, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_loop_guidance_reduces_the_seam():
    """Eq. 5's self-guidance, same seeds with u = 0 and u = 200: the seam |F_N - F_0| + |dF_N - dF_0| drops.

    The denoiser is exact for latents distributed N(0, I) (eps = sqrt(1 - abar) z), so
    samples without guidance are draws from that prior and the guidance has a whole
    distribution to steer in; the gradient goes through the real (tiny) VAE decoder,
    the denormalization and the inverse FFT.
    """
    model = random_model(seed=2)
    abar = alphas_cumprod(DiffusionConfig()).float()

    def prior(z, t, image, conditioned):
        return (1 - abar[t]).sqrt().reshape(-1, 1, 1, 1, 1) * z

    decode = decoder(model, (H, W))
    freqs = model.data.frequencies_hz()
    noise = torch.randn(4, K, 4, 6, 8, generator=torch.Generator().manual_seed(1))
    image = torch.zeros(4, 3, 6, 8)
    results = {}
    for u in (0.0, 200.0):
        loop = LoopGuidance(u, decode, freqs, FPS, 10, recurrences=2)
        z = sample_ddim(prior, noise, image, DiffusionConfig(), 12, 0.0, loop, torch.Generator().manual_seed(2))
        with torch.no_grad():
            amp = decode(z)
        results[u] = (loop_seam(amp, freqs, FPS, 10), amp.abs().mean().item())
    (before, amp0), (after, amp1) = results[0.0], results[200.0]
    ratio = (after.sum() / before.sum()).item()
    print(f"loop seam ratio u=200 / u=0: {ratio:.3f}; mean |amplitude| ratio {amp1 / amp0:.3f}")
    assert ratio < 0.75 and (after < before).all()
    assert ratio < 0.9 * amp1 / amp0          # the seam shrinks much more than the motion


@pytest.mark.slow
def test_sample_cli_writes_a_model_volume(tmp_path, capsys):
    ckpt = save_model(random_model(), tmp_path / "model.safetensors")
    rng = np.random.default_rng(0)
    write_png(tmp_path / "still.png", rng.random((30, 40, 3)).astype(np.float32))
    out = tmp_path / "motion.safetensors"
    def sample(path, *extra):
        return main(["sample", str(tmp_path / "still.png"), "--checkpoint", str(ckpt), "-o", str(path), *extra])

    assert sample(out, "--steps", "4", "--seed", "3") == 0
    volume = spectral.load_volume(out)
    assert volume.source == "model" and volume.amplitude.shape == (K, 4, H, W)
    assert volume.metadata["checkpoint"] == "model.safetensors" and volume.metadata["ddim_steps"] == "4"
    np.testing.assert_allclose(volume.frequencies_hz, np.arange(K) * FPS / T)
    assert np.isfinite(volume.amplitude).all()
    again = tmp_path / "again.safetensors"
    assert sample(again, "--steps", "4", "--seed", "3") == 0
    np.testing.assert_array_equal(spectral.load_volume(again).amplitude, volume.amplitude)   # same seed
    assert sample(again, "--steps", "4", "--seed", "4") == 0
    assert not np.allclose(spectral.load_volume(again).amplitude, volume.amplitude)
    assert sample(out, "--steps", "2", "--loop", "--loop-frames", "10") == 0
    meta = spectral.load_volume(out).metadata
    assert meta["loop"] == "true" and meta["loop_frames"] == "10" and meta["loop_guidance"] == "200.0"


@pytest.mark.parametrize("problem, message", [
    ("missing", "checkpoint not found"),
    ("vae-only", "only a VAE"),
    ("motion-file", "not a gdyn motion model checkpoint"),
])
def test_sample_cli_bad_checkpoint(tmp_path, capsys, problem, message):
    write_png(tmp_path / "still.png", np.zeros((8, 8, 3), np.float32))
    ckpt = tmp_path / "ckpt.safetensors"
    if problem == "vae-only":
        model = random_model()
        model.unet = None
        save_model(model, ckpt)
    elif problem == "motion-file":
        spectral.save_volume(spectral.SpectralVolume(np.zeros((2, 4, 3, 3), np.float32), [0, 1], 30, 4, "x"), ckpt)
    out = tmp_path / "m.safetensors"
    assert main(["sample", str(tmp_path / "still.png"), "--checkpoint", str(ckpt), "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_animate_with_the_model_source_loops_the_animation(tmp_path, capsys):
    """`gdyn animate --source model`: the model's volume drives the frames, the loop
    guidance targets the animation's own length, and the output names its source."""
    ckpt = save_model(random_model(), tmp_path / "model.safetensors")
    rng = np.random.default_rng(1)
    still = rng.random((24, 32, 3)).astype(np.float32)
    write_png(tmp_path / "still.png", still)
    out = tmp_path / "anim"
    assert main(["animate", str(tmp_path / "still.png"), "-o", str(out), "--source", "model",
                 "--checkpoint", str(ckpt), "--steps", "3", "--frames", "12", "--fps", "24",
                 "--speed", "2", "--loop"]) == 0
    assert "motion source: model" in capsys.readouterr().err
    volume = spectral.load_volume(out / "motion.safetensors")
    assert volume.source == "model" and volume.metadata["ddim_steps"] == "3"
    # 12 frames at 24 fps played 2x fast is 1 s of the model's time: 16 frames at its 16 fps.
    assert volume.metadata["loop_frames"] == str(round(12 / 24 * 2 * FPS))
    assert len(list((out / "frames").glob("*.png"))) == 12
    texture = spectral.motion_texture(volume, spectral.frame_times(13, 24.0))
    assert np.abs(texture[12] - texture[0]).max() < 1e-3     # the loop closes exactly
    assert main(["animate", str(tmp_path / "still.png"), "-o", str(tmp_path / "bad"), "--source", "model",
                 "--checkpoint", str(ckpt), "--steps", "0"]) == 2
    assert not (tmp_path / "bad").exists()

"""Shapes and wiring of the motion model: VAE, U-Net, frequency attention, checkpoints."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from gdyn_backend import spectral
from gdyn_backend.errors import UserError
from gdyn_backend.model.checkpoint import (
    DataInfo,
    MotionModel,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from gdyn_backend.model.diffusion import DiffusionConfig
from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet, load_stage_one
from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE, vae_loss

K = 4


def tiny_unet(attention: bool, seed: int = 0) -> MotionUNet:
    torch.manual_seed(seed)
    return MotionUNet(replace(UNET_CONFIGS["tiny"], num_bands=K, frequency_attention=attention)).eval()


def randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter (also the zero-initialised ones) a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def inputs(b=2, h=6, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, K, 4, h, w, generator=g), torch.tensor([10, 700])[:b],
            torch.rand(b, 3, h, w, generator=g) * 2 - 1, torch.ones(b))


def test_vae_shapes_per_band_and_odd_sizes():
    vae = SpectralVAE(VAE_CONFIGS["tiny"])
    x = torch.randn(2 * K, 4, 20, 30)                       # B*K band maps
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (2 * K, 4, 10, 15)
    assert vae.latent_size(20, 30) == (10, 15)
    assert vae.decode(mean, (20, 30)).shape == x.shape
    odd = torch.randn(3, 4, 21, 33)
    recon, mean, _ = vae(odd)
    assert recon.shape == odd.shape and mean.shape == (3, 4, 11, 17)
    parts = vae_loss(odd, recon, mean, torch.zeros_like(mean))
    assert set(parts) == {"loss", "l1", "gradient", "kl"}
    expected = parts["l1"] + 0.2 * parts["gradient"] + 1e-6 * parts["kl"]
    assert torch.allclose(parts["loss"], expected)


def test_unet_shapes_and_null_condition_ignores_image():
    unet = tiny_unet(True)
    randomize(unet)
    z, t, img, cond = inputs()
    out = unet(z, t, img, cond)
    assert out.shape == z.shape
    null = torch.zeros(2)
    a = unet(z, t, img, null)
    b = unet(z, t, torch.rand_like(img), null)
    assert torch.equal(a, b)                                 # null condition: the image is not seen
    assert not torch.allclose(unet(z, t, img, cond), unet(z, t, torch.rand_like(img), cond))


@pytest.mark.parametrize("attention", [False, True])
def test_frequency_attention_mixes_bands_only_when_on(attention):
    unet = tiny_unet(attention)
    randomize(unet)
    z, t, img, cond = inputs()
    base = unet(z, t, img, cond)
    z2 = z.clone()
    z2[:, 2] += torch.randn_like(z2[:, 2])                   # perturb band 2 only
    out = unet(z2, t, img, cond)
    others = [k for k in range(K) if k != 2]
    assert (out[:, 2] - base[:, 2]).abs().max() > 1e-3
    change = (out[:, others] - base[:, others]).abs().max().item()
    if attention:
        assert change > 1e-3, change
    else:
        assert change == 0.0                                  # bands are independent maps


def test_stage_two_starts_exactly_at_stage_one():
    stage1 = tiny_unet(False, seed=3)
    randomize(stage1)                                         # a "trained" stage-1 model
    stage2 = tiny_unet(True, seed=4)
    load_stage_one(stage2, stage1.state_dict())
    z, t, img, cond = inputs()
    assert torch.equal(stage1(z, t, img, cond), stage2(z, t, img, cond))  # zero-initialised outputs
    names = {id(p) for p in stage2.frequency_attention_parameters()}
    assert names and len(names) < len(list(stage2.parameters()))


@pytest.mark.slow
def test_paper_size_configs_build():
    with torch.device("meta"):
        unet1 = MotionUNet(UNET_CONFIGS["paper"])
        unet2 = MotionUNet(UNET_CONFIGS["paper"].with_frequency_attention())
        vae = SpectralVAE(VAE_CONFIGS["paper"])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 270e6 < count(unet1) < 280e6                        # the LDM paper's 274M U-Net
    assert 300e6 < count(unet2) < 315e6                        # + frequency attention layers
    assert 50e6 < count(vae) < 60e6                            # LDM KL-f4 autoencoder shape
    assert VAE_CONFIGS["paper"].downsampling == 4 and UNET_CONFIGS["paper"].channel_mult == (1, 2, 3, 4)


def test_torch_motion_texture_equals_spectral():
    """The loop guidance evaluates the same band sum on batched torch tensors, with gradients."""
    rng = np.random.default_rng(0)
    freqs = spectral.band_frequencies(16, 30.0, 150)
    volume = spectral.SpectralVolume(rng.normal(size=(16, 4, 5, 7)).astype(np.float32), freqs, 30.0, 150, "test")
    times = np.array([0.0, 1 / 30, 0.517, 4.96, 5.0])
    for anchored in (True, False):
        expected = spectral.motion_texture(volume, times, anchored)
        amplitude = torch.from_numpy(volume.amplitude)[None].requires_grad_(True)
        got = spectral.texture_from_amplitudes(amplitude, freqs, times, anchored)
        got.abs().sum().backward()
        assert amplitude.grad is not None and amplitude.grad.abs().sum() > 0
        np.testing.assert_allclose(got[0].detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def _tiny_model(attention=True) -> MotionModel:
    torch.manual_seed(0)
    unet = tiny_unet(attention)
    randomize(unet)
    return MotionModel(SpectralVAE(VAE_CONFIGS["tiny"]), spectral.FrequencyNormalizer(np.arange(1, K + 1, dtype=np.float32)),
                       DataInfo(20, 12, 30.0, 16, K), unet, DiffusionConfig(), 0.7, "attention", 12)


def test_model_file_round_trip(tmp_path):
    model = _tiny_model()
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path, require_unet=True)
    z, t, img, cond = inputs()
    assert torch.equal(model.unet(z, t, img, cond), loaded.unet(z, t, img, cond))
    assert loaded.data == model.data and loaded.latent_scale == 0.7 and loaded.step == 12
    np.testing.assert_array_equal(loaded.normalizer.scales, model.normalizer.scales)
    assert loaded.unet.config == model.unet.config and loaded.vae.config == model.vae.config


def test_model_file_errors(tmp_path):
    vae_only = _tiny_model()
    vae_only.unet = None
    path = save_model(vae_only, tmp_path / "vae.safetensors")
    with pytest.raises(UserError, match="only a VAE"):
        load_model(path, require_unet=True)
    motion = spectral.save_volume(spectral.SpectralVolume(np.zeros((2, 4, 3, 3), np.float32), [0, 1], 30, 4, "x"),
                                  tmp_path / "motion.safetensors")
    with pytest.raises(UserError, match="not a gdyn motion model checkpoint"):
        load_model(motion)
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_training_state_resumes_optimizer_exactly(tmp_path):
    def make():
        torch.manual_seed(0)
        return SpectralVAE(VAE_CONFIGS["tiny"])

    x = torch.randn(4, 4, 8, 8)

    def step(vae, opt):
        opt.zero_grad()
        recon, mean, logvar = vae(x, sample=False)
        vae_loss(x, recon, mean, logvar)["loss"].backward()
        opt.step()

    vae = make()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    for _ in range(3):
        step(vae, opt)
    save_training_state(tmp_path / "state.safetensors", vae, opt, 3, {"train": {"kind": "vae"}})
    step(vae, opt)                                            # uninterrupted 4th step
    resumed = make()
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    n, config = load_training_state(tmp_path / "state.safetensors", resumed, opt2)
    assert n == 3 and config == {"train": {"kind": "vae"}}
    step(resumed, opt2)
    for a, b in zip(vae.parameters(), resumed.parameters()):
        assert torch.equal(a, b)

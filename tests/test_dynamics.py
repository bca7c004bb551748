"""Modal dynamics (paper §6.3): ringing, damping, linearity, energy, forces, pins, drag.

Every number below is measured from simulated displacement signals; the
tolerances are stated next to each assertion.
"""

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import band_motion, make_clip, smooth_envelope, synthetic_still

from gdyn_backend import dynamics as dyn
from gdyn_backend import flow, pinning, spectral
from gdyn_backend.errors import UserError
from gdyn_backend.io import Still
from gdyn_backend.live import LivePreview
from gdyn_backend.presets import DEFAULT_PRESET, load_preset
from gdyn_backend.sources import model, procedural

H, W = 40, 64


def volume_of(shapes, freqs_hz, fps=30.0, source="test"):
    """A volume from complex mode shapes [M, 2, H, W] at freqs_hz [M] (> 0), band 0 = 0."""
    shapes = np.asarray(shapes, np.complex64)
    modes = np.concatenate([np.zeros((1,) + shapes.shape[1:], np.complex64), shapes])
    return spectral.from_complex_modes(modes, [0.0, *freqs_hz], fps, 150, source)


def single_mode(freq_hz=1.5, ax=2.0, ay=0.0, fps=30.0):
    shape = np.zeros((1, 2, H, W), np.complex64)
    env = smooth_envelope(W, H, seed=3, floor=0.6)
    shape[0, 0], shape[0, 1] = ax * env, ay * env
    return volume_of(shape, [freq_hz], fps)


def random_modes(freqs_hz, seed=0, x_only=False):
    """Smooth random complex mode shapes [M, 2, H, W] (1-3 px)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(freqs_hz), 2, H, W), np.complex64)
    for m in range(len(freqs_hz)):
        env = smooth_envelope(W, H, seed=seed + 10 * m, floor=0.3)
        for axis in range(1 if x_only else 2):
            out[m, axis] = env * rng.uniform(1, 3) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return out


def run(volume, frames, pokes=(), drags=(), **kw):
    sim = dyn.ModalSimulator(volume, **kw)
    return np.stack(list(dyn.simulate(sim, frames, pokes, drags))), sim


def local_response(disp, x, y, sigma):
    """Displacement [N, 2] around (x, y), averaged over a Gaussian of sigma px, of frames [N, 2, H, W]."""
    return np.array([[cv2.GaussianBlur(f[a], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)[y, x]
                      for a in range(2)] for f in disp])


def most_mobile_push(sim, strength):
    """(x, y, d): the most mobile pixel away from the border and a push of |d| = strength along the
    direction it moves most."""
    h, w = sim.basis.height, sim.basis.width
    y, x = np.unravel_index(np.argmax(sim.mobility[2:-2, 2:-2]), (h - 4, w - 4))
    y, x = y + 2, x + 2
    a = sim.basis.shape_at(x, y, smoothed=True)  # [M, 2]
    return x, y, strength * np.linalg.eigh(np.real(a.T @ np.conj(a)))[1][:, -1]


def energies(sim, frames):
    out = [sim.energy()]
    for _ in range(frames):
        sim.advance()
        out.append(sim.energy())
    return np.array(out)


def test_motion_starts_at_the_poke_and_rings_down_at_the_damping_rate():
    freqs, xi, fps, poke_frame, seconds = [0.4, 1.0, 2.2], 0.05, 30.0, 12, 10.0
    volume = volume_of(random_modes(freqs), freqs)
    poke = dyn.Poke(poke_frame, 30, 20, 3.0, -1.0)
    frames = poke_frame + 2 + int(seconds * fps)
    disp, _ = run(volume, frames, [poke], damping=xi, fps=fps)
    # Causal and on time: at rest through the poke's own frame, moving on the next one.
    assert np.abs(disp[:poke_frame + 1]).max() == 0.0
    assert np.abs(disp[poke_frame + 1]).max() > 0.05
    # A poke on the last frame acts on the step after it, so no frame shows it.
    late, _ = run(volume, frames, [dyn.Poke(frames - 1, 30, 20, 3.0, -1.0)], damping=xi, fps=fps)
    assert np.abs(late).max() == 0.0
    # Ring-down: every mode loses energy at least at the slowest mode's rate 2 xi w_min.
    sim = dyn.ModalSimulator(volume, damping=xi, fps=fps)
    sim.apply_poke(poke.x, poke.y, poke.dx, poke.dy)
    sim.advance()
    start = sim.energy()
    e = energies(sim, int(seconds * fps))
    bound = 1.25 * start * np.exp(-2 * xi * 2 * np.pi * min(freqs) * seconds)
    assert 0 < e[-1] <= bound
    # All three modes are below the 3 Hz reference, so each decays at the reference rate
    # sigma = xi * 2 pi * 3 Hz: energy within start * exp(-2 sigma t) up to the wobble of a damped
    # cycle ((1 + zeta) / (1 - zeta) <= 1.86 for zeta <= 0.3), bounded here with 1.5. Measured:
    # 1.32 at most; a simulation at half the damping ends 1.3e4x above the curve.
    sigma = xi * 2 * np.pi * dyn.DAMPING_REFERENCE_HZ
    assert np.all(e <= 1.5 * start * np.exp(-2 * sigma * np.arange(len(e)) / fps))


def test_the_physics_imports_nothing_of_gdyn_but_the_spectral_volume_and_errors():
    modules = set()
    for node in ast.walk(ast.parse(Path(dyn.__file__).read_text())):  # top level and inside functions
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(filter(None, ["gdyn_backend" if node.level else None, node.module]))
            # "from gdyn_backend import spectral" imports the module gdyn_backend.spectral.
            modules |= {f"{base}.{alias.name}" if base == "gdyn_backend" else base for alias in node.names}
    ours = {name for name in modules if name.split(".")[0] == "gdyn_backend"}
    assert ours == {"gdyn_backend.spectral", "gdyn_backend.errors"}, sorted(ours)


@pytest.mark.parametrize("f, fps", [(1.5, 24.0), (1.5, 60.0), (3.5, 60.0)])
def test_impulse_rings_at_mode_frequency_and_decays_at_damping_rate(f, fps):
    # At and above the reference frequency (3 Hz) a mode has the damping ratio xi; below it, it
    # decays at the reference mode's rate xi * 2 pi * 3 Hz (the ratio xi * 3 / f).
    xi = 0.05
    zeta = xi * max(f, dyn.DAMPING_REFERENCE_HZ) / f
    disp, _ = run(single_mode(f), int(8 * fps), [dyn.Poke(0, 30, 20, 3.0, 0.0)], fps=fps, damping=xi)
    u = disp[1:, 0, 20, 30].astype(np.float64)  # x at the poked pixel, frames 1.. (after the poke)
    t = np.arange(1, len(disp)) / fps
    # Frequency from the interpolated zero crossings: the damped frequency f sqrt(1 - zeta^2).
    s = np.flatnonzero(np.sign(u[:-1]) * np.sign(u[1:]) < 0)
    crossings = t[s] - u[s] * (t[s + 1] - t[s]) / (u[s + 1] - u[s])
    measured_f = 1.0 / (2.0 * np.mean(np.diff(crossings)))
    assert measured_f == pytest.approx(f * np.sqrt(1 - zeta ** 2), rel=0.01)
    # Decay from a log-linear fit of the positive peaks (parabolic sub-sample peaks).
    peaks = [i for i in range(1, len(u) - 1) if u[i] > u[i - 1] and u[i] >= u[i + 1] and u[i] > 0]
    times, heights = [], []
    for i in peaks:
        a, b, c = u[i - 1], u[i], u[i + 1]
        off = 0.5 * (a - c) / (a - 2 * b + c)
        times.append(t[i] + off / fps)
        heights.append(b - 0.25 * (a - c) * off)
    slope = np.polyfit(times, np.log(heights), 1)[0]
    assert len(peaks) >= 10
    assert -slope == pytest.approx(zeta * 2 * np.pi * f, rel=0.02)


def test_slow_bands_are_stiffened_to_the_mode_floor_and_respond_within_half_a_second():
    # A 0.17 Hz band (band 1 of 150 frames at 25 fps) would peak 1.5 s after a poke and, at 5 %
    # damping, ring for 20 s. It keeps its shape but rings at the 0.5 Hz floor, decaying at the
    # 3 Hz reference rate: the poke peaks within 0.5 s and is under 25 % of its peak after 3.5 s.
    fps, xi = 25.0, 0.05
    disp, sim = run(single_mode(25.0 / 150), int(4 * fps) + 1, [dyn.Poke(0, 30, 20, 3.0, 0.0)], fps=fps)
    assert sim.basis.omega[0] == pytest.approx(2 * np.pi * dyn.MODE_FLOOR_HZ)
    u = disp[:, 0, 20, 30]
    t = np.arange(len(u)) / fps
    zeta = xi * dyn.DAMPING_REFERENCE_HZ / dyn.MODE_FLOOR_HZ
    damped = 2 * np.pi * dyn.MODE_FLOOR_HZ * np.sqrt(1 - zeta ** 2)
    # The continuous peak time atan(w_d / sigma) / w_d = 0.42 s, on the frame grid (1 frame).
    assert t[np.argmax(u)] == pytest.approx(np.arctan2(damped, zeta * 2 * np.pi * dyn.MODE_FLOOR_HZ) / damped,
                                            abs=1 / fps)
    assert t[np.argmax(u)] <= 0.5
    assert np.abs(u[t >= 3.5]).max() <= 0.25 * u.max()
    # It rings (overshoots to the other side) rather than creeping back.
    assert u.min() < -0.1 * u.max()


@pytest.mark.parametrize("clip, start, window", [("waving_trees.mp4", 0, 150), ("candle.mp4", 0, 150)])
@pytest.mark.slow
def test_pokes_on_real_clips_peak_within_half_a_second_and_ring_down(shared_videos, clip, start, window):
    # Motion extracted from real footage (waving_trees: frames 0-149, 10 s at 15 fps, before the
    # person walks in at frame ~245; candle: 6 s at 25 fps). Its lowest band (0.1 / 0.17 Hz)
    # carries 31 % / 15 % of the motion: read literally (one damping ratio, no floor), a poke
    # peaked after 1.0 / 0.48 s and kept 50 % / 44 % of its peak in the last half second.
    # Measured now at 12, native and 60 fps: peaks after 0.28-0.42 s, 4 % in the last half second.
    volume, _ = flow.extract_volume(shared_videos / clip, start=start, window=window, width=160, height=None)
    for fps in (12.0, volume.fps, 60.0):
        sim = dyn.ModalSimulator(volume, fps=fps)
        x, y, d = most_mobile_push(sim, 3.0)
        frames = int(round(4 * fps)) + 1
        disp = np.stack(list(dyn.simulate(sim, frames, [dyn.Poke(0, x, y, *d)])))
        amplitude = np.linalg.norm(local_response(disp, x, y, sim.basis.footprint_px), axis=1)
        t = np.arange(frames) / fps
        assert t[np.argmax(amplitude)] <= 0.5, fps
        assert amplitude[t >= 3.5].max() <= 0.25 * amplitude.max(), fps
        assert 0.2 * 3.0 < amplitude.max() <= 1.01 * 3.0
        # Energy never grows without input (after the poke's one step), at 12-60 fps.
        sim.reset()
        sim.apply_poke(x, y, *d)
        sim.advance()
        e = energies(sim, frames)
        assert np.all(np.diff(e) <= 1e-12 * e[0]) and e[-1] < 0.01 * e[0]


def test_poke_of_strength_d_moves_the_most_mobile_point_about_d_pixels():
    # One uniform mode: the peak along the poke is |d| (the poke is scaled by the mode's own
    # impulse peak), sampled at the frames: 0.995 |d| measured.
    shape = np.zeros((1, 2, H, W), np.complex64)
    shape[0, 0] = 2.0
    disp, _ = run(volume_of(shape, [1.0]), 60, [dyn.Poke(0, 30, 20, 4.0, 0.0)], fps=30.0)
    peak = disp[:, 0, 20, 30].max()
    assert 0.97 * 4.0 < peak <= 4.0
    # Many modes: the component along d at the poked point never exceeds |d| (+1 % for sampling).
    freqs = [0.4, 0.8, 1.3, 2.1, 2.9]
    d = np.array([3.0, -2.0])
    disp, _ = run(volume_of(random_modes(freqs, seed=5), freqs), 120,
                  [dyn.Poke(0, 20, 15, *d)], fps=30.0)
    along = disp[:, :, 15, 20] @ (d / np.linalg.norm(d))
    assert along.max() <= 1.01 * np.linalg.norm(d)
    assert along.max() > 0.2 * np.linalg.norm(d)


def test_doubling_the_force_doubles_the_response():
    freqs = [0.4, 1.1, 2.5]
    volume = volume_of(random_modes(freqs, seed=1), freqs)
    one, _ = run(volume, 50, [dyn.Poke(3, 12.5, 30.2, 1.5, -0.5, 4)])
    two, _ = run(volume, 50, [dyn.Poke(3, 12.5, 30.2, 3.0, -1.0, 4)])
    assert np.abs(one).max() > 0.1
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5, atol=1e-5 * np.abs(one).max())


def test_overlapping_pokes_superpose():
    freqs = [0.4, 1.1, 2.5]
    volume = volume_of(random_modes(freqs, seed=2), freqs)
    a, b = dyn.Poke(2, 10, 10, 2.0, 1.0, 6), dyn.Poke(5, 50, 30, -1.0, 2.5, 3)
    joint, _ = run(volume, 60, [a, b])
    sep_a, _ = run(volume, 60, [a])
    sep_b, _ = run(volume, 60, [b])
    assert np.abs(sep_a).max() > 0.1 and np.abs(sep_b).max() > 0.1
    np.testing.assert_allclose(joint, sep_a + sep_b, atol=1e-5 * np.abs(joint).max())


@pytest.mark.parametrize("fps", [12.0, 24.0, 30.0, 60.0])
def test_default_integrator_never_gains_energy_without_input(fps):
    # Modes from slow sway to well above the Nyquist rate of 12 fps.
    freqs = [0.2, 0.9, 3.0, 5.5, 9.0, 14.0]
    volume = volume_of(random_modes(freqs, seed=4), freqs, fps=fps)
    sim = dyn.ModalSimulator(volume, fps=fps)
    assert sim.integrator == "exact" and sim.unstable_modes() == 0
    sim.apply_poke(30, 20, 3.0, -2.0, duration=2)
    sim.advance(), sim.advance()  # the force acts on these two steps only
    e = energies(sim, 400)
    assert e[0] > 0
    assert np.all(np.diff(e) <= 1e-12 * e[0])  # monotone, up to float rounding
    assert e[-1] < e[0]
    # Without damping the exact integrator conserves energy (it neither gains nor loses).
    sim0 = dyn.ModalSimulator(volume, fps=fps, damping=0.0)
    sim0.apply_poke(30, 20, 3.0, -2.0)
    sim0.advance()
    e0 = energies(sim0, 400)
    np.testing.assert_allclose(e0, e0[0], rtol=1e-9)


def test_forward_euler_gains_energy_on_a_stiff_mode_at_low_fps():
    f, fps, xi = 3.0, 12.0, 0.05
    volume = single_mode(f, fps=fps)
    w, dt = 2 * np.pi * f, 1 / fps
    growth = 1 - 2 * xi * w * dt + (w * dt) ** 2  # per-step |eigenvalue|^2 of forward Euler
    sims = {}
    for name in dyn.INTEGRATORS:
        sims[name] = dyn.ModalSimulator(volume, fps=fps, damping=xi, integrator=name)
        sims[name].apply_poke(30, 20, 2.0, 0.0)
        sims[name].advance()
    euler, exact = energies(sims["euler"], 24), energies(sims["exact"], 24)
    assert sims["euler"].unstable_modes() == 1 and sims["exact"].unstable_modes() == 0
    assert euler[-1] > 100 * euler[0]  # 2 seconds at 12 fps
    # The energy of a complex coordinate grows by exactly the eigenvalue factor on average;
    # over 24 steps the measured rate matches it within 2 %.
    assert (euler[-1] / euler[0]) ** (1 / 24) == pytest.approx(growth, rel=0.02)
    assert exact[-1] < exact[0]


def test_force_direction_and_mode_shape_direction():
    freqs = [0.5, 1.2, 2.0]
    volume = volume_of(random_modes(freqs, seed=6, x_only=True), freqs)
    ypoke, _ = run(volume, 30, [dyn.Poke(0, 30, 20, 0.0, 3.0)])
    assert np.abs(ypoke).max() == 0.0  # x-only modes cannot be moved along y
    xpoke, _ = run(volume, 30, [dyn.Poke(0, 30, 20, 3.0, 0.0)])
    assert np.abs(xpoke[:, 1]).max() == 0.0
    assert np.all(xpoke[1:4, 0, 20, 30] > 0.1)  # moves with the push right after it
    # General complex 2D modes: the poked point starts moving along the push.
    volume = volume_of(random_modes(freqs, seed=7), freqs)
    for angle in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        d = 2.0 * np.array([np.cos(angle), np.sin(angle)])
        disp, _ = run(volume, 3, [dyn.Poke(0, 22, 17, *d)])
        assert disp[1, :, 17, 22] @ d > 0


def test_pinned_region_does_not_move():
    freqs = [0.5, 1.2, 2.0]
    volume = volume_of(random_modes(freqs, seed=8), freqs)
    mask = np.ones((H, W), np.float32)
    mask[:, :24] = 0.0
    pokes = [dyn.Poke(0, 10, 20, 3.0, 2.0), dyn.Poke(4, 40, 20, -2.0, 1.0, 3)]  # one inside the pin
    drags = [dyn.Drag(10, 20, 45, 10, 3.0, 3.0)]
    volume = pinning.pinned(volume, mask)  # the one pin rule (here the mask is at the motion resolution)
    disp, _ = run(volume, 40, pokes, drags)
    assert np.abs(disp[:, :, :, :24]).max() == 0.0
    assert np.abs(disp[:, :, :, 30:]).max() > 0.5
    only_pinned, _ = run(volume, 20, [dyn.Poke(0, 10, 20, 3.0, 2.0)])
    assert np.abs(only_pinned).max() == 0.0  # poking a pinned point moves nothing


def test_drag_holds_the_point_within_a_pixel_then_rings_down():
    freqs = [0.4, 0.9, 1.6, 2.4]
    volume = volume_of(random_modes(freqs, seed=9), freqs)
    drag = dyn.Drag(5, 40, 33, 14, 6.0, -4.0, ease_frames=8)
    disp, sim = run(volume, 40 + 150, drags=[drag], damping=0.08)
    held = disp[5:41, :, 14, 33]
    targets = np.array([drag.offset_at(f) for f in range(5, 41)])
    assert np.linalg.norm(held - targets, axis=1).max() < 1.0  # within a pixel while held
    assert np.linalg.norm(held[-1] - [6.0, -4.0]) < 0.1
    assert np.abs(disp[:5]).max() == 0.0
    after = np.linalg.norm(disp[41:, :, 14, 33], axis=1)
    # Ring-down: amplitude in the last second is well below the first second after release.
    assert after[-30:].max() < 0.6 * after[:30].max()
    sim.reset()
    sim.hold(33, 14, 6.0, -4.0)
    sim.release()
    e = energies(sim, 150)
    assert np.all(np.diff(e) <= 1e-12 * e[0]) and e[-1] < 0.5 * e[0]


def test_drag_cannot_move_a_point_where_no_mode_reaches():
    freqs = [0.5, 1.2]
    volume = volume_of(random_modes(freqs, seed=10, x_only=True), freqs)
    sim = dyn.ModalSimulator(volume)
    sim.hold(30, 20, 2.0, 5.0)
    u = sim.displacement()[:, 20, 30]
    assert u[0] == pytest.approx(2.0, abs=0.05) and u[1] == 0.0


def test_bad_parameters_are_user_errors():
    volume = single_mode()
    with pytest.raises(UserError):
        dyn.ModalSimulator(volume, damping=1.5)
    with pytest.raises(UserError):
        dyn.ModalSimulator(volume, fps=0)
    with pytest.raises(UserError):
        dyn.ModalSimulator(volume, integrator="rk4")
    with pytest.raises(UserError):
        dyn.ModalSimulator(volume).apply_poke(1, 1, 1, 1, duration=0)


def test_state_round_trip_replays_the_same_frames():
    freqs = [0.5, 1.7]
    sim = dyn.ModalSimulator(volume_of(random_modes(freqs, seed=11), freqs))
    sim.apply_poke(20, 20, 2.0, 1.0, duration=5)
    sim.step(), sim.step()
    saved = sim.state
    first = [sim.step() for _ in range(10)]
    sim.set_state(saved)
    np.testing.assert_array_equal(np.stack(first), np.stack([sim.step() for _ in range(10)]))


# ---------------------------------------------------------------------------
# Volumes from every source


def video_volume(tmp_path):
    """Motion extracted by optical flow from a synthetic clip with known band motion."""
    fps, t = 30.0, 60
    motion = band_motion(W, H, fps, t, bands=(2, 5, 9), amplitudes_px=(2.0, 1.0, 0.5), seed=1)
    clip = make_clip(synthetic_still(W, H, seed=1), motion, t, fps)
    traj = flow.extract_trajectories(iter(clip), 0, t, W, H)
    return spectral.volume_from_trajectories(traj, fps, num_bands=16, source="video")


def procedural_volume(tmp_path):
    still = Still(synthetic_still(W, H, seed=2), None, 8)
    return procedural.sample_volume(still, load_preset(DEFAULT_PRESET), seed=0,
                                    mask=np.ones((H, W), np.float32))


def model_volume(tmp_path):
    """A volume sampled from a random-init tiny motion model (no trained weights exist)."""
    import torch

    from gdyn_backend.model.checkpoint import DataInfo, MotionModel, save_model
    from gdyn_backend.model.diffusion import DiffusionConfig
    from gdyn_backend.model.unet import UNET_CONFIGS, MotionUNet
    from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE

    torch.manual_seed(0)
    tiny = MotionModel(SpectralVAE(VAE_CONFIGS["tiny"]), spectral.FrequencyNormalizer(np.full(16, 0.5, np.float32)),
                       DataInfo(W, H, 30.0, 150, 16), MotionUNet(UNET_CONFIGS["tiny"]), DiffusionConfig(),
                       stage="frequency")
    path = save_model(tiny, tmp_path / "tiny.safetensors")
    return model.sample_volume(Still(synthetic_still(W, H, seed=3), None, 8), path, seed=0, steps=2)


@pytest.mark.parametrize("make", [video_volume, procedural_volume, model_volume],
                         ids=["video", "procedural", "model"])
def test_any_source_pokes_and_drags(make, tmp_path):
    volume = make(tmp_path)
    sim = dyn.ModalSimulator(volume, damping=0.05)
    # Poke the most mobile point: it moves along the push, at most |d| and at least 0.2 |d|.
    x, y, d = most_mobile_push(sim, 3.0)
    disp = np.stack(list(dyn.simulate(sim, 3 * int(volume.fps), [dyn.Poke(0, x, y, *d)])))
    assert np.isfinite(disp).all()
    # The bound is on the motion around p averaged over the force footprint (single pixels are noisy).
    along = local_response(disp, x, y, sim.basis.footprint_px) @ (d / 3.0)
    assert 0.2 * 3.0 < along.max() <= 1.01 * 3.0
    # Drag the same point 2 px: held within a pixel.
    sim.reset()
    sim.hold(x, y, *(d / 1.5))
    assert np.linalg.norm(sim.step()[:, y, x] - d / 1.5) < 1.0


def test_live_preview_takes_still_pixels_and_renders_frames():
    freqs = [0.4, 0.9, 1.6, 2.4]
    still = Still(synthetic_still(2 * W, 2 * H, seed=5), None, 8)  # preview at twice the motion size
    preview = LivePreview(volume_of(random_modes(freqs, seed=12), freqs), still)
    sim = preview.simulator
    rgb, _, disp = preview.frame()
    assert rgb.shape == (2 * H, 2 * W, 3) and disp.shape == (2, 2 * H, 2 * W)
    assert np.abs(disp).max() == 0.0
    assert np.abs(rgb - still.rgb).max() < 1e-3  # at rest the frame is the still
    preview.hold(70, 30, 8.0, -6.0)  # still pixels
    rgb, _, disp = preview.frame()
    assert np.linalg.norm(disp[:, 30, 70] - [8.0, -6.0]) < 1.0
    assert np.abs(rgb - still.rgb).mean() > 0.01
    assert set(preview.timings) == {"step", "synthesis", "render"}
    preview.release()
    energies_after = []
    for _ in range(8):
        preview.frame()
        energies_after.append(sim.energy())
    assert np.all(np.diff(energies_after) <= 1e-12 * energies_after[0])  # released: rings down


def test_live_preview_pins_by_the_same_rule_as_simulate():
    freqs = [0.4, 0.9, 1.6, 2.4]
    still = Still(synthetic_still(2 * W, 2 * H, seed=6), None, 8)
    mask = np.ones((2 * H, 2 * W), np.float32)
    mask[:, :48] = 0.0  # still pixels; 24 motion pixels
    preview = LivePreview(volume_of(random_modes(freqs, seed=14), freqs), still, mask)
    preview.hold(100, 40, 6.0, -4.0)
    rgb, _, disp = preview.frame()
    assert np.abs(disp[:, :, :48]).max() == 0.0  # black is exactly still
    assert np.linalg.norm(disp[:, 40, 100] - [6.0, -4.0]) < 1.0  # the free part still follows the hand
    assert np.array_equal(preview.weights[:, :48], np.zeros((2 * H, 48), np.float32))
    preview.release()
    preview.simulator.reset()
    preview.poke(20, 40, 8.0, 0.0, duration=2)  # inside the pin
    assert max(np.abs(preview.frame()[2]).max() for _ in range(10)) == 0.0


def test_release_gives_the_same_motion_at_any_frame_rate():
    # The exact integrator samples the continuous ring-down: the pose 1 s after letting go is
    # the same at 12 and 60 fps (to float rounding); forward Euler's differs by whole pixels.
    freqs = [0.4, 0.9, 1.6, 2.4]
    volume = volume_of(random_modes(freqs, seed=13), freqs)
    poses = {}
    for integrator in dyn.INTEGRATORS:
        for fps in (12, 60):
            sim = dyn.ModalSimulator(volume, fps=fps, integrator=integrator)
            sim.hold(30, 20, 5.0, 3.0)
            sim.release()
            for _ in range(fps):
                sim.advance()
            poses[integrator, fps] = sim.displacement()
    assert np.abs(poses["exact", 12]).max() > 1.0
    np.testing.assert_allclose(poses["exact", 12], poses["exact", 60], atol=1e-4)
    assert np.abs(poses["euler", 12] - poses["euler", 60]).max() > 1.0

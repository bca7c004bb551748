"""The native CPU kernel (render/splat_kernel.c): the same frames as the portable path, built
once and cached, and a clean fall-back where no compiler works.

The kernel is optional for users (a machine without a C compiler renders on the portable
path), but not for CI: with CI set in the environment, a kernel that does not build fails here.
"""

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from synthetic import synthetic_still

from gdyn_backend.render import native
from gdyn_backend.render.default import DefaultRenderer, render_batch
from gdyn_backend.render.holes import (FULL_COVERAGE, _coarse_fill, _halved, _pushed, second_level_filled,
                                       stretch_samples)
from gdyn_backend.render.splat import prepare_splat, splat_prepared

if native.kernel() is None:
    if os.environ.get("CI"):
        raise AssertionError(f"the native kernel must build in CI: {native.status()}")
    pytest.skip(f"no native kernel here: {native.status()}", allow_module_level=True)


@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
    """An empty kernel cache and a forgotten kernel; restored afterwards."""
    monkeypatch.setenv("GDYN_CACHE_DIR", str(tmp_path / "cache"))
    native.reset()
    yield tmp_path / "cache"
    monkeypatch.undo()
    native.reset()


def _swaying_scene(h: int, w: int, seed: int = 0, amplitude: float = 6.0):
    """A photo-like still, a smooth sway that stretches and tears, and its weights."""
    import cv2

    rng = np.random.default_rng(seed)
    rgb = synthetic_still(w, h)[..., :3].astype(np.float32)
    coarse = rng.standard_normal((2, 4, 5)).astype(np.float32)
    flow = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse]) * amplitude
    flow[:, h // 3:h // 2, w // 4:w // 2] *= 3.0  # a block moving faster than its surroundings: holes open
    ramp = np.clip(np.arange(w, dtype=np.float32) - 0.6 * w, 0, 0.1 * w)  # a region stretched 2x along x
    flow[0, 2 * h // 3:] += ramp
    weights = np.sqrt((flow ** 2).sum(axis=0)).astype(np.float32)
    return rgb, np.ascontiguousarray(flow), weights


@pytest.mark.parametrize("b,h,w,threads", [(2, 40, 56, 1), (1, 300, 420, 2), (1, 301, 419, 2)])
def test_native_sums_equal_scipy_and_index_add(b, h, w, threads):
    """The three ways to sum agree to float rounding (2e-5 on values in 0..1): the native kernel
    (bands on threads, odd sizes), scipy.sparse and torch index_add_."""
    g = torch.Generator().manual_seed(5)
    src, z = torch.rand(b, 4, h, w, generator=g), torch.rand(b, 1, h, w, generator=g) * 5
    flow = torch.randn(b, 2, h, w, generator=g) * 4
    torch.set_num_threads(threads)
    packed, portable = prepare_splat(src, z), prepare_splat(src, z, native_kernel=False)
    assert packed.packed is not None and portable.packed is None
    with torch.no_grad():
        fast, cov = splat_prepared(packed, flow)
        scipy_sums, scipy_cov = splat_prepared(portable, flow, sparse=True)
        torch_sums, torch_cov = splat_prepared(portable, flow, sparse=False)
    torch.set_num_threads(2)
    for other, other_cov in ((scipy_sums, scipy_cov), (torch_sums, torch_cov)):
        assert float((fast - other).abs().max()) < 2e-5 and float((cov - other_cov).abs().max()) < 2e-5
    assert float(cov.mean()) > 0.5  # most of the picture is covered: the comparison is not of zeros


def test_native_sums_are_the_same_for_motions_taller_than_a_band():
    """A motion of half the picture's height makes the bands of one phase reach the same rows;
    the kernel then runs them one after the other, and the sums still agree and repeat bit for bit."""
    g = torch.Generator().manual_seed(6)
    h, w = 320, 300
    src, z = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 1] = torch.linspace(-160, 160, h).view(h, 1)  # rows fan out over the whole height
    flow[:, 0] = torch.randn(h, w, generator=g)
    with torch.no_grad():
        fast, cov = splat_prepared(prepare_splat(src, z), flow)
        again, _ = splat_prepared(prepare_splat(src, z), flow)
        slow, slow_cov = splat_prepared(prepare_splat(src, z, native_kernel=False), flow, sparse=False)
    assert torch.equal(fast, again)
    assert float((fast - slow).abs().max()) < 2e-5 and float((cov - slow_cov).abs().max()) < 2e-5


def test_non_finite_flow_lands_outside_and_never_writes_out_of_bounds():
    """NaN and infinite displacements are clamped to the border like any far motion: the
    picture equals the one where those pixels moved 10^6 px away, and no memory is touched
    outside the sums (the process survives; the border cells hold what fell off)."""
    g = torch.Generator().manual_seed(7)
    h, w = 64, 80
    src, z = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)
    flow = torch.randn(1, 2, h, w, generator=g)
    far = flow.clone()
    bad = torch.rand(h, w, generator=g) < 0.1
    for channel, value in ((0, float("nan")), (1, float("inf"))):
        flow[0, channel][bad] = value
    far[0, 0][bad], far[0, 1][bad] = -1e6, 1e6  # NaN lands at the low border, inf at the high one
    with torch.no_grad():
        out, cov = splat_prepared(prepare_splat(src, z), flow)
        expected, expected_cov = splat_prepared(prepare_splat(src, z), far)
    assert torch.isfinite(out).all() and torch.equal(out, expected) and torch.equal(cov, expected_cov)


@pytest.mark.parametrize("h,w", [(64, 64), (37, 51)])
def test_native_pull_push_pyramid_equals_torch(h, w):
    """The fill's pyramid in C (pull from the first level up, push back down to it) equals the
    torch one to float rounding (1e-5), odd sizes included; an image with no hole above the
    first level needs no second level."""
    g = torch.Generator().manual_seed(8)
    image = torch.rand(1, 3, h, w, generator=g)
    confidence = (torch.rand(1, 1, h, w, generator=g) * 3 - 1).clamp(0, 1)
    confidence[:, :, h // 4:h // 2, w // 4:w // 2] = 0.0  # a hole several levels deep
    feed = confidence * torch.rand(1, 1, h, w, generator=g)
    with torch.no_grad():
        colour, alpha = _halved(image, feed)
        first = (np.ascontiguousarray(colour[0].permute(1, 2, 0).numpy()), np.ascontiguousarray(alpha[0, 0].numpy()))
        second = second_level_filled(*first)
        filled = _pushed(native.kernel(), second, *first)
        expected = _coarse_fill(image, feed)[0].permute(1, 2, 0).numpy()
    assert float(np.abs(filled - expected).max()) < 1e-5
    assert second_level_filled(first[0], np.ones_like(first[1])) is None


@pytest.mark.parametrize("alpha, threads", [(False, 2), (True, 3)])
def test_default_renderer_frames_equal_the_portable_path(alpha, threads):
    """A frame with holes, stretches and tears: the native path (its strips and hole pixels
    shared among `threads`) and the portable path give the same picture within 2e-5 (of 1),
    with and without alpha, at a size cut into bands."""
    h, w = 288, 512
    rgb, flow, weights = _swaying_scene(h, w)
    a = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w) if alpha else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native_rgb, native_alpha = DefaultRenderer(device="cpu").render(rgb, a, flow, weights)
    finally:
        torch.set_num_threads(before)
    plain_rgb, plain_alpha = DefaultRenderer(device="cpu", native_kernel=False).render(rgb, a, flow, weights)
    assert float(np.abs(native_rgb - plain_rgb).max()) < 2e-5
    if alpha:
        assert float(np.abs(native_alpha - plain_alpha).max()) < 2e-5
    # the scene opens holes of both kinds: the stretch fill and the push-pull fill ran on both paths
    renderer = DefaultRenderer(device="cpu", native_kernel=False)
    renderer._prepare(rgb, a, weights)
    with torch.no_grad():
        _, coverage = splat_prepared(renderer._prepared, torch.from_numpy(flow)[None])
        stretched = stretch_samples(renderer._prepared, torch.from_numpy(flow)[None], coverage < FULL_COVERAGE)
    assert float((coverage < 0.5).float().mean()) > 0.002 and stretched.pixels.numel() > 500


def test_training_still_differentiates_through_the_torch_path():
    """Autograd never enters the kernel: a gradient reaches the source through render_batch."""
    g = torch.Generator().manual_seed(9)
    src = torch.rand(1, 3, 32, 40, generator=g, requires_grad=True)
    flow = torch.randn(1, 2, 32, 40, generator=g) * 3
    out = render_batch(src, flow, torch.rand(1, 1, 32, 40, generator=g) * 5, 5.0, 10.0)
    out.sum().backward()
    assert float(src.grad.abs().sum()) > 0


def test_run_parallel_runs_every_call_once_on_at_most_the_threads_given():
    """More calls than threads: each runs once, results come back in order, no more than
    `threads` run at a time (this thread is one of them); a failing call's error is raised, and
    no call runs on after that."""
    active, most, lock = [0], [0], threading.Lock()

    def call(i: int):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.002)
        with lock:
            active[0] -= 1
        return i * i

    for threads in (2, 3):
        most[0] = 0
        assert native.run_parallel([lambda i=i: call(i) for i in range(9)], threads) == [i * i for i in range(9)]
        assert 2 <= most[0] <= threads  # in parallel, never more than asked
    finished = []

    def failing():
        raise ValueError("bad strip")

    for at in (0, 2):  # on this thread, and (likely) on a helper
        calls = [lambda i=i: finished.append(call(i)) for i in range(6)]
        calls.insert(at, failing)
        with pytest.raises(ValueError, match="bad strip"):
            native.run_parallel(calls, 2)
        done = len(finished)
        time.sleep(0.05)
        assert active[0] == 0 and len(finished) == done


def test_kernel_is_built_once_then_loaded_from_the_cache(fresh_kernel_state):
    """The first use compiles into the cache folder (whole or nothing: no temporary is left);
    a new process (here: a reset) loads that library without compiling again."""
    assert native.kernel() is not None and native.status().startswith("native kernel")
    (library,) = fresh_kernel_state.glob("gdyn_kernel-*")
    assert [p.name for p in fresh_kernel_state.iterdir()] == [library.name]
    built = library.stat().st_mtime_ns
    native.reset()
    assert native.kernel() is not None and library.stat().st_mtime_ns == built


def test_without_a_compiler_frames_come_from_the_portable_path(fresh_kernel_state, monkeypatch):
    """No compiler on PATH, a compiler that fails, or GDYN_NATIVE=0: one status line says why,
    nothing new is left in the cache, and the renderer gives the same frame as with the kernel."""
    h, w = 96, 128
    rgb, flow, weights = _swaying_scene(h, w, seed=2)
    expected, _ = DefaultRenderer(device="cpu").render(rgb, None, flow, weights)  # builds into the cache
    cached = sorted(fresh_kernel_state.iterdir())
    for library in cached:
        library.unlink()  # so that a failing build cannot load the good one
    false = shutil.which("false")
    for env, reason in (({"CC": "no-such-compiler-gdyn", "PATH": ""}, "no C compiler found"),
                        ({"CC": false}, "did not compile"),
                        ({"GDYN_NATIVE": "0"}, "turned off by GDYN_NATIVE=0")):
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            native.reset()
            assert native.kernel() is None and reason in native.status()
            assert native.status().startswith("portable")
            frame, _ = DefaultRenderer(device="cpu").render(rgb, None, flow, weights)
            assert float(np.abs(frame - expected).max()) < 2e-5
        assert not any(fresh_kernel_state.iterdir())

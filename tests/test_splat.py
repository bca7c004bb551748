"""Softmax splatting: exact shifts, identity, collisions by weight, holes marked."""

import numpy as np
import pytest
import torch
from synthetic import synthetic_still

from gdyn_backend.render.holes import push_pull_fill
from gdyn_backend.render.splat import prepare_splat, softmax_splat, splat_prepared


def _image(h=40, w=56, c=3):
    return torch.from_numpy(np.moveaxis(synthetic_still(w, h), 2, 0)[:c].copy())[None]


def _constant_flow(h, w, dx, dy):
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


@pytest.mark.parametrize("dx,dy", [(3, 0), (0, -2), (5, 4), (-7, 1)])
def test_integer_flow_moves_image_exactly(dx, dy):
    src = _image()
    _, _, h, w = src.shape
    out, cov = softmax_splat(src, _constant_flow(h, w, dx, dy), torch.rand(1, 1, h, w))
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    ys0, xs0 = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    assert torch.allclose(out[..., ys, xs], src[..., ys0, xs0], atol=1e-6)
    assert torch.allclose(cov[..., ys, xs], torch.ones(1), atol=1e-6)
    # the strip the image moved away from is a hole: coverage 0, not silently black
    uncovered = torch.ones(h, w, dtype=torch.bool)
    uncovered[ys, xs] = False
    assert uncovered.any() and float(cov[0, 0][uncovered].max()) == 0.0


def test_subpixel_flow_matches_shifted_bilinear_samples():
    # A linear ramp shifted by 0.25 px must read ramp(x - 0.25) exactly where covered.
    h, w = 8, 32
    ramp = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).clone()
    out, cov = softmax_splat(ramp, _constant_flow(h, w, 0.25, 0.0), None)
    inner = out[0, 0, :, 1:w]
    assert torch.allclose(inner, ramp[0, 0, :, 1:w] - 0.25, atol=1e-5)
    assert torch.allclose(cov[0, 0, :, 1:w], torch.ones(1), atol=1e-6)
    # column 0 receives only the 0.75 share of pixel 0: partial coverage, still the right value
    assert torch.allclose(cov[0, 0, :, 0], torch.full((h,), 0.75), atol=1e-6)
    assert torch.allclose(out[0, 0, :, 0], torch.zeros(h), atol=1e-6)


def test_subpixel_shift_of_photo_like_image_equals_bilinear_resample():
    src = _image(48, 64)
    _, _, h, w = src.shape
    dx, dy = 1.5, -0.75
    out, _ = softmax_splat(src, _constant_flow(h, w, dx, dy), None)
    # interior expected values: bilinear sample of src at (x - dx, y - dy)
    grid_y, grid_x = torch.meshgrid(torch.arange(h, dtype=torch.float32) - dy,
                                    torch.arange(w, dtype=torch.float32) - dx, indexing="ij")
    grid = torch.stack([2 * grid_x / (w - 1) - 1, 2 * grid_y / (h - 1) - 1], dim=-1)[None]
    expected = torch.nn.functional.grid_sample(src, grid, mode="bilinear", align_corners=True)
    assert torch.allclose(out[..., 2:-2, 3:-3], expected[..., 2:-2, 3:-3], atol=1e-5)


def test_zero_flow_is_identity_bit_exact_after_quantisation():
    src = torch.round(_image() * 255) / 255  # an 8-bit still, as frames come from
    out, cov = softmax_splat(src, torch.zeros(1, 2, *src.shape[2:]), torch.randn(1, 1, *src.shape[2:]) * 20)
    assert torch.allclose(out, src, atol=1e-6, rtol=0)
    assert torch.equal(cov, torch.ones_like(cov))
    assert torch.equal(torch.round(out * 255), torch.round(src * 255))


def test_collision_resolves_to_larger_weight():
    # two sources (value 1 at x=2, value 5 at x=6) both land on x=4
    src = torch.zeros(1, 1, 1, 9)
    src[..., 2], src[..., 6] = 1.0, 5.0
    flow = torch.zeros(1, 2, 1, 9)
    flow[0, 0, 0, 2], flow[0, 0, 0, 6] = 2.0, -2.0
    flow[0, 0, 0, 4] = 4.0  # the pixel that was at x=4 moves away
    for winner, z_left, z_right in ((1.0, 12.0, 0.0), (5.0, 0.0, 12.0)):
        z = torch.zeros(1, 1, 1, 9)
        z[..., 2], z[..., 6] = z_left, z_right
        out, cov = softmax_splat(src, flow, z)
        assert abs(float(out[0, 0, 0, 4]) - winner) < 1e-3 * 4  # exp(-12) share of the loser
        assert float(cov[0, 0, 0, 4]) == pytest.approx(2.0)
    average, _ = softmax_splat(src, flow, None)  # equal weights: the mean
    assert float(average[0, 0, 0, 4]) == pytest.approx(3.0)


def test_large_importance_range_is_stable():
    src = _image()
    z = torch.zeros(1, 1, *src.shape[2:])
    z[..., :, : src.shape[3] // 2] = 1e4  # would overflow exp() without the max shift
    out, cov = softmax_splat(src, torch.zeros(1, 2, *src.shape[2:]), z)
    assert torch.isfinite(out).all() and torch.allclose(out, src, atol=1e-6)


def test_batch_items_are_independent():
    a, b = _image(), _image().flip(-1)
    flows = torch.cat([_constant_flow(40, 56, 2, 1), _constant_flow(40, 56, -3, 0.5)])
    both, cov = softmax_splat(torch.cat([a, b]), flows, None)
    one_a, cov_a = softmax_splat(a, flows[:1], None)
    one_b, cov_b = softmax_splat(b, flows[1:], None)
    assert torch.allclose(both[:1], one_a, atol=1e-6) and torch.allclose(both[1:], one_b, atol=1e-6)
    assert torch.allclose(cov, torch.cat([cov_a, cov_b]))


def test_sparse_product_and_index_add_agree():
    """On the CPU without autograd the sums are a scipy.sparse product, cut into bands on
    several threads; with autograd (and on CUDA) torch index_add_ accumulates them. Both agree
    to float rounding, for a batch and for an image large enough to be cut into bands, and a
    gradient flows through the index_add_ path."""
    g = torch.Generator().manual_seed(3)
    for b, h, w in ((2, 40, 56), (1, 700, 800)):
        src = torch.rand(b, 3, h, w, generator=g)
        flow = torch.randn(b, 2, h, w, generator=g) * 4
        z = torch.rand(b, 1, h, w, generator=g) * 5
        torch.set_num_threads(2)
        prepared = prepare_splat(src, z)
        fast, cov = splat_prepared(prepared, flow, sparse=True)
        slow, cov_slow = splat_prepared(prepared, flow, sparse=False)
        assert torch.allclose(fast, slow, atol=2e-5) and torch.allclose(cov, cov_slow, atol=2e-5)
        leaf = src.clone().requires_grad_(True)
        auto, _ = softmax_splat(leaf, flow, z)  # autograd: the index_add_ path
        auto.sum().backward()
        assert torch.allclose(auto.detach(), fast, atol=2e-5) and float(leaf.grad.abs().sum()) > 0


def test_push_pull_keeps_covered_pixels_and_fills_holes_smoothly():
    src = _image(64, 64)
    confidence = torch.ones(1, 1, 64, 64)
    confidence[..., 20:40, 10:30] = 0.0
    holed = src * confidence
    filled = push_pull_fill(holed, confidence)
    assert torch.equal(filled[confidence.expand_as(src) > 0], src[confidence.expand_as(src) > 0])
    hole = filled[..., 20:40, 10:30]
    assert float(hole.min()) > 0.05  # not black
    # the fill lies within the range of the surrounding colours
    ring = src[..., 16:44, 6:34]
    assert float(hole.max()) <= float(ring.max()) + 1e-6 and float(hole.min()) >= float(ring.min()) - 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    src = _image()
    flow = torch.randn(1, 2, *src.shape[2:]) * 3
    z = torch.rand(1, 1, *src.shape[2:]) * 5
    cpu, cov = softmax_splat(src, flow, z)
    gpu, cov_g = softmax_splat(src.cuda(), flow.cuda(), z.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4) and torch.allclose(cov, cov_g.cpu(), atol=1e-4)

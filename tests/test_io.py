"""Image, displacement-map and output-folder IO."""

import cv2
import numpy as np
import pytest

from gdyn_backend import io
from gdyn_backend.errors import UserError


def test_grayscale_rgba_and_16_bit_stills(tmp_path):
    gray = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    still = io.read_image(tmp_path / "g.png")
    assert still.rgb.shape == (12, 10, 3) and still.alpha is None and still.bit_depth == 8
    np.testing.assert_allclose(still.rgb[:, :, 1], gray / 255.0, atol=1e-6)

    bgra = np.zeros((5, 6, 4), np.uint16)
    bgra[..., 2] = 65535  # red
    bgra[..., 3] = 1000
    cv2.imwrite(str(tmp_path / "c.png"), bgra)
    still = io.read_image(tmp_path / "c.png")
    assert still.bit_depth == 16
    np.testing.assert_allclose(still.rgb[0, 0], [1, 0, 0])
    np.testing.assert_allclose(still.alpha, 1000 / 65535, rtol=1e-6)


def test_png_writer_keeps_16_bit_and_alpha(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.random((7, 9, 3)).astype(np.float32)
    alpha = rng.random((7, 9)).astype(np.float32)
    io.write_png(tmp_path / "f.png", rgb, alpha, bit_depth=16)
    back = io.read_image(tmp_path / "f.png")
    assert back.bit_depth == 16
    np.testing.assert_allclose(back.rgb, rgb, atol=1 / 65535)
    np.testing.assert_allclose(back.alpha, alpha, atol=1 / 65535)


def test_displacement_exr_round_trip(tmp_path):
    d = np.random.default_rng(0).normal(0, 3, (2, 11, 13)).astype(np.float32)
    io.write_displacement_exr(tmp_path / "d.exr", d)
    assert np.array_equal(io.read_displacement_exr(tmp_path / "d.exr"), d)
    raw = cv2.imread(str(tmp_path / "d.exr"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(raw[:, :, 2], d[0])  # R = x
    assert np.array_equal(raw[:, :, 1], d[1])  # G = y


def test_bad_images_give_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        io.read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        io.read_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("not a picture")
    with pytest.raises(UserError, match="cannot decode"):
        io.read_image(tmp_path / "text.jpg")
    ok = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(ok[: len(ok) // 2])
    with pytest.raises(UserError):
        io.read_image(tmp_path / "cut.png")


def test_masks_resample_when_aspect_matches_and_refuse_otherwise(tmp_path):
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    m = io.read_mask(tmp_path / "m.png", width=80, height=40)
    assert m.shape == (40, 80)
    assert m[:, :38].max() == 0.0 and m[:, 42:].min() == 1.0
    with pytest.raises(UserError, match="aspect"):
        io.read_mask(tmp_path / "m.png", width=40, height=40)


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with io.atomic_output_dir(out) as tmp:
            (tmp / "frames").mkdir()
            (tmp / "frames" / "0000.png").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_output_dir(out) as tmp:
        (tmp / "motion.safetensors").write_bytes(b"1")
    assert (out / "motion.safetensors").read_bytes() == b"1"
    with io.atomic_output_dir(out) as tmp:  # a previous gdyn output is replaced
        (tmp / "motion.safetensors").write_bytes(b"2")
    assert (out / "motion.safetensors").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_dir_never_replaces_user_files(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a gdyn output"):
        with io.atomic_output_dir(out):
            pass
    assert (out / "thesis.txt").read_text() == "keep me"


def test_video_writer_mp4_and_gif(tmp_path):
    frames = [np.full((9, 11, 3), i / 5, np.float32) for i in range(5)]
    for name in ("v.mp4", "v.gif"):
        writer = io.VideoWriter(tmp_path / name, fps=10)
        for f in frames:
            writer.append(f)
        writer.close()
        info, it = io.open_video(tmp_path / name) if name.endswith("mp4") else (None, None)
        assert (tmp_path / name).stat().st_size > 0
        if info:
            got = list(it)
            assert len(got) == 5 and info.fps == pytest.approx(10)
            assert abs(float(got[4].mean()) - 0.8) < 0.03
    with pytest.raises(UserError):
        io.VideoWriter(tmp_path / "v.avi", fps=10)

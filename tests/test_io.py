"""Image, displacement-map and output-folder IO."""

import errno
import subprocess
import sys

import cv2
import numpy as np
import pytest

from gdyn_backend import io
from gdyn_backend.errors import UserError, os_error_message


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


def test_png_writer_rounds_clips_and_zeroes_nan(tmp_path):
    """Each channel is scaled by 255 and rounded (not only the first: OpenCV's scalar trap); values
    outside 0..1 are clipped; NaN is written as 0. Channel order survives (RGB in, RGB back)."""
    rgb = np.array([[[0.2, 0.5, 1.0], [-0.5, 1.7, np.nan], [0.1 / 255, 0.6 / 255, 254.4 / 255]]], np.float32)
    io.write_png(tmp_path / "f.png", rgb)
    back = np.rint(io.read_image(tmp_path / "f.png").rgb * 255).astype(int)
    assert back.tolist() == [[[51, 128, 255], [0, 255, 0], [0, 1, 254]]]


def _exr_channels(path) -> list[str]:
    """The channel names in an EXR file's header (its chlist attribute)."""
    data = path.read_bytes()
    start = data.index(b"channels\0chlist\0") + len(b"channels\0chlist\0") + 4
    names, at = [], start
    while data[at] != 0:
        end = data.index(b"\0", at)
        names.append(data[at:end].decode())
        at = end + 1 + 16
    return names


def _maps(rng) -> dict[str, np.ndarray]:
    """Displacement maps whose RLE chunks take every path: incompressible rows (stored as they
    are), pinned rows (runs longer than one count byte says), short runs among literals, width 1."""
    noise = rng.normal(0, 3, (2, 11, 13))
    pinned = np.zeros((2, 7, 300))
    patches = np.zeros((2, 30, 1000))
    patches[:, :, 200:600] = rng.normal(0, 2, (2, 30, 400))
    patches[:, 5] = 1.5
    patches[:, 9, ::3] = 0.25  # runs of two among literals
    scattered = np.where(rng.random((2, 40, 700)) < 0.5, 0, rng.normal(0, 5, (2, 40, 700)))
    half_pinned = rng.normal(0, 5, (2, 40, 700)) * (np.arange(700) >= 350)  # a still left half
    column = rng.normal(0, 1, (2, 5, 1))
    return {name: m.astype(np.float32) for name, m in (("noise", noise), ("pinned", pinned), ("patches", patches),
                                                       ("scattered", scattered), ("half_pinned", half_pinned),
                                                       ("column", column))}


@pytest.mark.parametrize("path", ["native", "portable"])
def test_displacement_exr_round_trip(tmp_path, monkeypatch, path):
    """Read back bit for bit by OpenEXR (through OpenCV) on both writers, R = x and G = y: the
    native writer's own RLE chunks in a two-channel file, OpenCV's three-channel one (B = 0)
    where there is no kernel. Pinned pixels cost almost nothing; both files are the same size."""
    from gdyn_backend.render import native

    if path == "portable":
        monkeypatch.setattr(native, "kernel", lambda: None)
    elif native.kernel() is None:
        pytest.skip(f"no native kernel here: {native.status()}")
    for name, d in _maps(np.random.default_rng(0)).items():
        file = tmp_path / f"{name}.exr"
        io.write_displacement_exr(file, d)
        assert np.array_equal(io.read_displacement_exr(file), d), name
        raw = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(raw[:, :, 2], d[0]) and np.array_equal(raw[:, :, 1], d[1]), name  # R = x, G = y
        assert _exr_channels(file) == (["G", "R"] if path == "native" else ["B", "G", "R"]), name
    sizes = {name: (tmp_path / f"{name}.exr").stat().st_size for name in ("pinned", "half_pinned")}
    assert sizes["pinned"] < 0.05 * 2 * 4 * 7 * 300 + 1000
    assert sizes["half_pinned"] < 0.7 * 2 * 4 * 40 * 700  # half the pixels pinned: ~half the bytes


def test_native_and_portable_displacement_files_are_the_same_size(tmp_path, monkeypatch):
    from gdyn_backend.render import native

    if native.kernel() is None:
        pytest.skip(f"no native kernel here: {native.status()}")
    d = _maps(np.random.default_rng(1))["scattered"]
    io.write_displacement_exr(tmp_path / "native.exr", d)
    monkeypatch.setattr(native, "kernel", lambda: None)
    io.write_displacement_exr(tmp_path / "portable.exr", d)
    native_size, portable_size = ((tmp_path / f"{n}.exr").stat().st_size for n in ("native", "portable"))
    assert abs(native_size / portable_size - 1) < 0.05


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


def _jpeg_with_thumbnail(width: int = 64, height: int = 48) -> bytes:
    """A JPEG whose APP1 (EXIF) segment holds a whole JPEG thumbnail, end marker FFD9 included."""
    rng = np.random.default_rng(3)
    main = cv2.imencode(".jpg", (rng.random((height, width, 3)) * 255).astype(np.uint8))[1].tobytes()
    thumb = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    app1 = b"Exif\0\0" + thumb
    return main[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + main[2:]


def test_truncated_jpeg_is_refused_even_with_an_end_marker_in_its_thumbnail(tmp_path):
    whole = _jpeg_with_thumbnail()
    (tmp_path / "whole.jpg").write_bytes(whole + b"trailing bytes some cameras append")
    assert io.read_image(tmp_path / "whole.jpg").rgb.shape == (48, 64, 3)
    for keep in (0.9, 0.6):  # OpenCV decodes these with only a warning, the rest grey
        (tmp_path / "cut.jpg").write_bytes(whole[: int(len(whole) * keep)])
        with pytest.raises(UserError, match="truncated"):
            io.read_image(tmp_path / "cut.jpg")


def test_header_size_is_checked_before_decoding(tmp_path, monkeypatch):
    ok = cv2.imencode(".png", np.zeros((40, 30, 3), np.uint8))[1].tobytes()
    decoded = []
    monkeypatch.setattr(io.cv2, "imdecode", lambda *a: decoded.append(a) or None)
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 30 * 39)
    (tmp_path / "big.png").write_bytes(ok)
    with pytest.raises(UserError, match="30x40 pixels"):
        io.read_image(tmp_path / "big.png")
    assert decoded == []  # refused from the header alone


def test_atomic_writer_names_the_users_path_and_the_reason(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError) as caught:
        with io.atomic_output_dir(out) as tmp:
            (tmp / "frames").mkdir()
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "frames" / "0003.png"))
    assert caught.value.filename == str(out / "frames" / "0003.png")
    assert os_error_message(caught.value) == (f"{out}/frames/0003.png: disk full (no space left on the device); "
                                              "free some space or write somewhere else")
    # An I/O error a library reports as text (safetensors: "... (os error 30)") becomes the OSError it is.
    with pytest.raises(OSError) as caught:
        with io.atomic_path(tmp_path / "m.safetensors"):
            raise RuntimeError("Error while serializing: I/O error: Read-only file system (os error 30)")
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, capsys):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # that process has exited: its PID is free
    stale = [tmp_path / f".out.partial-{dead}", tmp_path / f".out.old-{dead}", tmp_path / f".m.partial-{dead}.mp4"]
    for path in stale[:2]:
        (path / "frames").mkdir(parents=True)
    stale[2].write_bytes(b"half a video")
    alive = tmp_path / ".out.partial-1"  # PID 1 is always alive
    alive.mkdir()
    other = tmp_path / f".outer.partial-{dead}"  # another output's: left to that output's next run
    other.mkdir()
    with io.atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "motion.safetensors").write_bytes(b"1")
    io.VideoWriter(tmp_path / "m.mp4", 30.0).abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "out"])
    err = capsys.readouterr().err
    assert all(f"removed {p}, left by process {dead}" in err for p in stale), err

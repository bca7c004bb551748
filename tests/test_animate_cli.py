"""`gdyn animate`: output layout, exact maps, bit depth and alpha, video, bad inputs, atomicity."""

import importlib.util

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
from synthetic import band_motion, synthetic_still, write_raw_motion

from gdyn_backend import animate as animate_module
from gdyn_backend import io, spectral
from gdyn_backend.cli import main
from gdyn_backend.errors import Cancelled
from gdyn_backend.progress import Progress

W, H = 128, 80  # still
MW, MH = 64, 40  # motion resolution (half)


@pytest.fixture
def inputs(tmp_path):
    still = synthetic_still(W, H)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), (still[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    motion = band_motion(MW, MH, 30.0, 30, amplitudes_px=(3.0, 1.5, 0.5))
    volume = spectral.volume_from_trajectories(motion.trajectories(30, 30.0), 30.0, num_bands=16)
    path = tmp_path / "motion.safetensors"
    spectral.save_volume(volume, path)
    return image, path


def _run(*argv):
    return main(["animate", *map(str, argv)])


def test_outputs_layout_frame0_and_exact_maps(inputs, tmp_path):
    image, motion = inputs
    out = tmp_path / "out"
    assert _run(image, "--motion", motion, "-o", out, "--frames", 12, "--fps", 24) == 0
    frames = sorted((out / "frames").iterdir())
    maps = sorted((out / "displacement").iterdir())
    assert [f.name for f in frames] == [f"{i:04d}.png" for i in range(12)]
    assert [f.name for f in maps] == [f"{i:04d}.exr" for i in range(12)]
    assert (out / "motion.safetensors").is_file()
    assert not list(tmp_path.glob(".out.partial-*"))

    # frame 0 is the still, bit for bit
    assert np.array_equal(cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED), cv2.imread(str(image)))
    # maps are the saved motion at full resolution, in output pixels (forward convention)
    used = spectral.load_volume(out / "motion.safetensors")
    for i in (0, 5, 11):
        expected = spectral.resample_displacement(spectral.displacement_at(used, i / 24.0), W, H)
        got = io.read_displacement_exr(maps[i])
        assert got.shape == (2, H, W)
        assert np.abs(got - expected).max() < 1e-4
    assert np.abs(io.read_displacement_exr(maps[5])).max() > 1.0  # it really moves
    # a later frame differs from the still where the motion is large
    f5 = cv2.imread(str(frames[5])).astype(np.float32)
    assert np.abs(f5 - cv2.imread(str(image))).mean() > 2.0


def test_amplitude_speed_and_loop_are_applied(inputs, tmp_path):
    image, motion = inputs
    out = tmp_path / "out"
    assert _run(image, "--motion", motion, "-o", out, "--frames", 10, "--fps", 30,
                "--amplitude", 2, "--speed", 1.5, "--loop") == 0
    original = spectral.load_volume(motion)
    used = spectral.load_volume(out / "motion.safetensors")
    assert np.allclose(used.amplitude, 2 * original.amplitude)
    # loop: every frequency makes whole cycles in 10 frames, so frame 10 == frame 0
    assert np.allclose(used.frequencies_hz * 10 / 30, np.round(used.frequencies_hz * 10 / 30))
    assert np.abs(spectral.displacement_at(used, 10 / 30)).max() < 1e-3


def test_sixteen_bit_rgba_keeps_depth_and_alpha(tmp_path, inputs):
    _, motion = inputs
    still = synthetic_still(W, H, seed=3)
    alpha = np.tile(np.linspace(0.2, 1.0, W, dtype=np.float32), (H, 1))
    rgba16 = (np.dstack([still[:, :, ::-1], alpha]) * 65535 + 0.5).astype(np.uint16)
    image = tmp_path / "rgba16.png"
    cv2.imwrite(str(image), rgba16)
    out = tmp_path / "out"
    assert _run(image, "--motion", motion, "-o", out, "--frames", 4) == 0
    first = cv2.imread(str(out / "frames" / "0000.png"), cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint16 and first.shape == (H, W, 4)
    assert np.array_equal(first, rgba16)
    later = cv2.imread(str(out / "frames" / "0003.png"), cv2.IMREAD_UNCHANGED)
    assert later.dtype == np.uint16 and later.shape == (H, W, 4)
    assert later[:, :, 3].min() > 0.15 * 65535  # alpha is carried, not dropped to 0 or forced to 1
    # --bit-depth 8 forces 8-bit output
    out8 = tmp_path / "out8"
    assert _run(image, "--motion", motion, "-o", out8, "--frames", 2, "--bit-depth", 8) == 0
    assert cv2.imread(str(out8 / "frames" / "0001.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8


def _video_frames(path):
    reader = imageio.get_reader(str(path), "ffmpeg" if path.suffix == ".mp4" else None)
    with reader:
        return [frame for frame in reader]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_is_written(inputs, tmp_path, suffix):
    image, motion = inputs
    out = tmp_path / "out"
    video = out / f"anim{suffix}"  # inside OUTDIR: appears with it
    assert _run(image, "--motion", motion, "-o", out, "--frames", 9, "--video", video) == 0
    frames = _video_frames(video)
    assert len(frames) == 9 and frames[0].shape[:2] == (H, W)
    nested = tmp_path / "out3" / "videos" / f"anim{suffix}"
    assert _run(image, "--motion", motion, "-o", tmp_path / "out3", "--frames", 2, "--video", nested) == 0
    assert len(_video_frames(nested)) == 2
    outside = tmp_path / f"beside{suffix}"
    assert _run(image, "--motion", motion, "-o", tmp_path / "out2", "--frames", 3, "--video", outside) == 0
    assert len(_video_frames(outside)) == 3


def test_mask_black_region_has_exactly_zero_displacement(inputs, tmp_path):
    image, motion = inputs
    mask = np.full((H, W), 255, np.uint8)
    mask[:, : W // 2] = 0
    mask_path = tmp_path / "mask.png"
    cv2.imwrite(str(mask_path), mask)
    out = tmp_path / "out"
    assert _run(image, "--motion", motion, "-o", out, "--frames", 6, "--mask", mask_path) == 0
    for i in range(6):
        d = io.read_displacement_exr(out / "displacement" / f"{i:04d}.exr")
        assert np.all(d[:, :, : W // 2] == 0.0)
    assert np.abs(d[:, :, W // 2:]).max() > 0.5
    frame = cv2.imread(str(out / "frames" / "0005.png"))
    still = cv2.imread(str(image))
    # pinned pixels far from the moving half keep their colour exactly
    assert np.array_equal(frame[:, : W // 2 - 8], still[:, : W // 2 - 8])


def test_grey_scales_the_motion_once_and_the_saved_motion_replays_the_maps(inputs, tmp_path):
    """The pin rule (gdyn_backend.pinning): M in the volume once, black cut to 0 at full resolution."""
    image, motion = inputs
    mask = np.full((H, W), 255, np.uint8)
    mask[:, :32], mask[:, 32:64] = 0, 128  # black, grey 128/255, white (edges on motion pixels)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    assert _run(image, "--motion", motion, "-o", tmp_path / "free", "--frames", 6) == 0
    assert _run(image, "--motion", motion, "-o", tmp_path / "out", "--frames", 6,
                "--mask", tmp_path / "mask.png") == 0
    saved = spectral.load_volume(tmp_path / "out" / "motion.safetensors")
    grey = np.float32(128 / 255)
    for i in range(1, 6):
        free = io.read_displacement_exr(tmp_path / "free" / "displacement" / f"{i:04d}.exr")
        got = io.read_displacement_exr(tmp_path / "out" / "displacement" / f"{i:04d}.exr")
        tol = 1e-5 * np.abs(free).max()
        assert np.all(got[:, :, :32] == 0.0)
        np.testing.assert_allclose(got[:, :, 36:60], grey * free[:, :, 36:60], atol=tol)  # not grey squared
        np.testing.assert_allclose(got[:, :, 68:], free[:, :, 68:], atol=tol)
        replay = spectral.resample_displacement(spectral.displacement_at(saved, i / 30.0), W, H) * (mask > 0)
        np.testing.assert_allclose(got, replay, atol=1e-4)
    assert np.abs(free).max() > 0.5


def _bad_motion_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file")
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weights": np.zeros((3, 3), np.float32)}, str(other))
    good = spectral.volume_from_trajectories(np.zeros((8, 2, 10, 16), np.float32), 30.0, num_bands=4)
    amp = good.amplitude.copy()
    amp[1, 0, 2, 3] = np.nan
    nan = write_raw_motion(tmp_path / "nan.safetensors", amp, 30.0, 8)  # save_volume refuses NaN
    return {"text": text, "other": other, "nan": nan, "missing": tmp_path / "none.safetensors"}


def test_bad_inputs_one_line_exit_2_no_outdir(inputs, tmp_path, capsys):
    image, motion = inputs
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = [[tmp_path / "missing.png", "--motion", motion],
             [corrupt, "--motion", motion],
             [image, "--motion", motion, "--frames", 0],
             [image, "--motion", motion, "--speed", 0],
             [image, "--motion", motion, "--video", tmp_path / "a.avi"],
             [image, "--motion", motion, "--video", tmp_path / "no" / "such" / "a.mp4"]]
    cases += [[image, "--motion", bad] for bad in _bad_motion_files(tmp_path).values()]
    for i, case in enumerate(cases):
        out = tmp_path / f"out{i}"
        capsys.readouterr()
        assert _run(*case, "-o", out) == 2, case
        err = capsys.readouterr().err.strip()
        assert err.startswith("gdyn: error: ") and "\n" not in err and "Traceback" not in err, err
        assert not out.exists(), case
        assert not list(tmp_path.glob(f".out{i}.partial-*"))


def test_failure_mid_way_leaves_no_outdir(inputs, tmp_path, monkeypatch):
    image, motion = inputs
    out = tmp_path / "out"
    real_write = io.write_png
    written = []

    def failing_write(path, *args, **kwargs):
        if len(written) == 3:
            raise OSError("disk full (simulated)")
        written.append(path)
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_png", failing_write)
    video = tmp_path / "v.mp4"
    with pytest.raises(OSError):
        animate_module.animate(image, out, animate_module.AnimateOptions(motion=motion, frames=8, video=video))
    assert len(written) == 3
    assert not out.exists() and not video.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cancel_mid_way_leaves_no_outdir(inputs, tmp_path):
    image, motion = inputs
    out = tmp_path / "out"
    progress = Progress(lambda stage, done, total: progress.cancel() if done == 2 else None)
    with pytest.raises(Cancelled):
        animate_module.animate(image, out, animate_module.AnimateOptions(motion=motion, frames=8), progress)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_user_folder_is_not_replaced(inputs, tmp_path, capsys):
    image, motion = inputs
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert _run(image, "--motion", motion, "-o", out, "--frames", 2) == 2
    assert (out / "keep.txt").read_text() == "user data"


@pytest.mark.skipif(importlib.util.find_spec("gdyn_backend.sources.procedural") is None,
                    reason="the procedural motion source is not in this checkout")
def test_default_source_is_procedural(inputs, tmp_path):
    image, _ = inputs
    out = tmp_path / "out"
    assert _run(image, "-o", out, "--frames", 5, "--seed", 1) == 0
    assert len(list((out / "frames").iterdir())) == 5
    assert spectral.load_volume(out / "motion.safetensors").source == "procedural"

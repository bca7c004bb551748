"""Real-world video quirks in `gdyn extract` (issue: tree.avi, a hand entering the shot), on clips
the tests make with known motion, and on ../shared/data/videos/waving_trees.mp4:

- a variable-frame-rate file (real frames at uneven times, decoded on a constant grid with exact
  repeats): the repeats are found, refused with the reason when the real frames are too sparse
  for the bands, else filled in time between the real frames (not a staircase);
- something entering the shot for a few frames: refused with its frame range unless --force;
- the start frame is written beside the motion file (MOTION.png) and the pair animates.
"""

from __future__ import annotations

import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from synthetic import SHARED_STILLS, band_motion, make_clip, synthetic_still, write_frames_folder

from gdyn_backend import spectral
from gdyn_backend.cli import main
from gdyn_backend.io import open_video, read_image
from gdyn_backend.flow import extract_volume

W, H, FPS, T = 128, 96, 30.0, 60
BANDS, AMPLITUDES = (1, 2), (1.5, 0.8)     # 0.5 Hz and 1 Hz over the 60-frame window
WAVING_TREES = SHARED_STILLS.parent / "videos" / "waving_trees.mp4"


def write_vfr_mp4(frames: np.ndarray, fps: float, path):
    """A lossless H.264 MP4 of frames [N, H, W, 3] shot at `fps` that stores only the frames that differ
    from the one before, each at its own time (a variable frame rate, time base 1/fps), the way a
    phone or tree.avi stores a scene that changes unevenly."""
    folder = write_frames_folder(frames, path.parent / f"{path.stem}-frames")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", str(fps),
                    "-i", str(folder / "%04d.png"), "-vf", "mpdecimate=hi=1:lo=1:frac=0", "-fps_mode", "vfr",
                    "-video_track_timescale", str(int(fps)), "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def vfr(tmp_path_factory):
    """(clip path, real slots, motion): real frames 1-3 slots apart at 30 fps, 70 slots."""
    motion = band_motion(W, H, FPS, T, BANDS, AMPLITUDES, seed=2)
    gaps = np.random.default_rng(0).choice([1, 2, 3], 60)
    slots = np.cumsum(np.r_[0, gaps])
    slots = slots[slots < T + 10]
    clip = make_clip(synthetic_still(W, H, seed=1), motion, T + 10, FPS)
    held = np.stack([clip[slots[slots <= t].max()] for t in range(T + 10)])  # the scene changes at `slots` only
    return write_vfr_mp4(held, FPS, tmp_path_factory.mktemp("vfr") / "uneven.mp4"), slots, motion


def test_variable_frame_rate_decodes_to_exact_repeats_on_its_grid(vfr):
    path, slots, _ = vfr
    info, frames = open_video(path)
    frames = list(frames)
    repeats = [t for t in range(1, len(frames)) if np.array_equal(frames[t], frames[t - 1])]
    assert info.fps == FPS                          # the file's time grid, not its 14 fps average
    last = int(slots[-1])                           # the last real frame; its duration may or may not follow
    assert len(frames) > last and [t for t in repeats if t <= last] == [t for t in range(last) if t not in set(slots)]


def _band_amplitudes(volume, motion):
    """Median over pixels of |A_k| / known amplitude, for the known bands."""
    magnitude = np.sqrt((np.abs(volume.complex_modes()) ** 2).sum(axis=1))
    return [float(np.median(magnitude[k] / (a * motion.envelope))) for k, a in zip(BANDS, AMPLITUDES)]


def test_sparse_real_frames_are_refused_with_the_reason(vfr, tmp_path, capsys):
    path, slots, _ = vfr
    out = tmp_path / "m.safetensors"
    assert main(["extract", str(path), "-o", str(out), "--frames", str(T), "--size", f"{W}x{H}"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    repeated = T - int(np.sum(slots < T))
    largest_gap = int(np.diff(slots[slots < T + 3]).max())
    assert line.startswith(f"gdyn: error: clip rejected: {repeated} of the {T} decoded frames repeat the frame before")
    assert f"real frames are up to {largest_gap} frames apart" in line
    assert f"use --bands {T // (4 * largest_gap) + 1} or fewer" in line
    assert not out.exists() and not out.with_suffix(".png").exists()


def _rebuilt_error(volume, motion) -> float:
    """Mean end-point error (pixels) of the motion rebuilt from the volume's bands against the known motion."""
    rebuilt = spectral.motion_texture(volume, spectral.frame_times(T, FPS))  # [T, 2, H, W]
    return float(np.sqrt(((rebuilt - motion.trajectories(T, FPS)) ** 2).sum(axis=1)).mean())


def test_real_frames_are_used_with_their_times(vfr):
    """With bands the real frames can carry (real frames up to 3 apart: 6 bands, up to 2.5 Hz),
    the volume recovers the known bands (amplitudes within 5 %) and the known motion better than
    the staircase the decoded repeats give when each real frame is held (the known motion
    itself, held: error ratio stated below)."""
    path, slots, motion = vfr
    bands = T // (4 * 3) + 1
    volume, _ = extract_volume(path, window=T, num_bands=bands, width=W, height=H)
    assert volume.metadata["motion_check"] == "passed"
    assert int(volume.metadata["repeated_frames"]) == T - int(np.sum(slots < T))
    ratios = _band_amplitudes(volume, motion)
    truth = motion.trajectories(T, FPS)
    staircase = spectral.volume_from_trajectories(np.stack([truth[slots[slots <= t].max()] for t in range(T)]),
                                                  FPS, bands)
    ours, held = _rebuilt_error(volume, motion), _rebuilt_error(staircase, motion)
    print(f"VFR clip: band amplitude / known {np.round(ratios, 3)}; rebuilt motion error {ours:.3f} px, "
          f"the exact motion held at real frames {held:.3f} px")
    assert all(abs(r - 1) <= 0.05 for r in ratios), ratios
    assert ours < 0.7 * held


def entering_clip(with_object: bool) -> np.ndarray:
    """60 frames of a gentle sway; with_object: a skin-coloured disk 44 px across (a hand) comes in
    from the right in frames 44-53, up to 12 % of the picture."""
    motion = band_motion(W, H, FPS, T, BANDS, (0.6, 0.3), seed=4)
    frames = make_clip(synthetic_still(W, H, seed=3), motion, T, FPS)
    if with_object:
        for t in range(44, 54):
            mask = np.zeros((H, W), np.float32)
            cv2.circle(mask, (W + 10 - 8 * (t - 43), H // 2), 22, 1.0, -1)
            frames[t] = frames[t] * (1 - mask[..., None]) + np.float32([0.85, 0.6, 0.45]) * mask[..., None]
    return frames


@pytest.mark.slow
def test_something_entering_the_shot_is_refused_with_its_frames(tmp_path, capsys):
    clean = write_frames_folder(entering_clip(False), tmp_path / "clean")
    entering = write_frames_folder(entering_clip(True), tmp_path / "entering")
    common = ["--frames", str(T), "--size", f"{W}x{H}"]
    assert main(["extract", str(clean), "-o", str(tmp_path / "clean.safetensors"), *common]) == 0
    out = tmp_path / "entering.safetensors"
    assert main(["extract", str(entering), "-o", str(out), *common]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    first, last = (int(v) for v in line.split("frames ")[1].split(":")[0].split("-"))
    with capsys.disabled():
        print(f"\nentering object (frames 44-53): {line}")
    assert 44 <= first <= 46 and 51 <= last <= 53 and "something entered the shot" in line and "--force" in line
    assert not out.exists()
    assert main(["extract", str(entering), "-o", str(out), *common, "--force"]) == 0
    assert "kept despite the filter (--force): frames" in capsys.readouterr().err
    assert spectral.load_volume(out).metadata["motion_check"].startswith(f"forced: frames {first}-{last}")


def test_start_frame_is_written_beside_the_motion_and_the_pair_animates(tmp_path, capsys):
    frames = entering_clip(False)
    folder = write_frames_folder(frames, tmp_path / "clip")
    out = tmp_path / "sub" / "MOTION.safetensors"
    assert main(["extract", str(folder), "-o", str(out), "--start", "5", "--frames", "40", "--size", "64x48"]) == 0
    still = tmp_path / "sub" / "MOTION.png"
    assert f"wrote {still}: start frame 5, {W}x{H}" in capsys.readouterr().out
    written = read_image(still).rgb
    assert written.shape == (H, W, 3) and np.abs(written - read_image(folder / "0005.png").rgb).max() == 0
    assert main(["animate", str(still), "--motion", str(out), "-o", str(tmp_path / "anim"), "--frames", "3"]) == 0
    assert len(list((tmp_path / "anim" / "frames").glob("*.png"))) == 3


@pytest.mark.skipif(not WAVING_TREES.is_file(), reason="../shared/data/videos is absent (not part of the project)")
@pytest.mark.slow
def test_waving_trees_person_walking_in_is_refused_unless_forced(tmp_path, capsys):
    """Swaying conifers (frames 0-149) pass; the window of frames 137-286, in which a person
    walks in (frames 243-258 by eye), is refused with that frame range."""
    out = tmp_path / "trees.safetensors"
    assert main(["extract", str(WAVING_TREES), "-o", str(out)]) == 0
    assert spectral.load_volume(out).metadata["motion_check"] == "passed"
    assert main(["extract", str(WAVING_TREES), "-o", str(tmp_path / "p.safetensors"), "--start", "137"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    first, last = (int(v) for v in line.split("frames ")[1].split(":")[0].split("-"))
    with capsys.disabled():
        print(f"\nwaving_trees, start 137: {line}")
    assert 240 <= first <= 248 and 252 <= last <= 262

"""`gdyn extract` on bad inputs: one clear error line, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
from synthetic import band_motion, make_clip, synthetic_still, write_frames_folder, write_mp4

from gdyn_backend.cli import main

FPS = 30.0


@pytest.fixture(scope="module")
def clip():
    """30 frames, 64x48, a little motion: [30, 48, 64, 3] float32."""
    return make_clip(synthetic_still(64, 48), band_motion(64, 48, FPS, 30, (2,), (0.5,)), 30, FPS)


def _run_failing(tmp_path, capsys, video, *options) -> str:
    """Run `gdyn extract`, check it failed cleanly, return the error line."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "motion.safetensors"
    assert main(["extract", str(video), "-o", str(out), *options]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    assert errors[0].startswith("gdyn: error: ") and "Traceback" not in err
    assert not out.exists() and list(out_dir.iterdir()) == []  # no output, no partial file
    return errors[0]


def test_missing_file(tmp_path, capsys):
    line = _run_failing(tmp_path, capsys, tmp_path / "nowhere.mp4")
    assert "video not found" in line and "nowhere.mp4" in line


def test_text_file_named_mp4(tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my holiday notes, not a video\n")
    line = _run_failing(tmp_path, capsys, fake)
    assert "cannot read video" in line and "not a video" in line


def test_mp4_cut_in_half(tmp_path, capsys, clip):
    """The index (moov atom) of a default mp4 is at the end: the cut file cannot open."""
    whole = write_mp4(clip, tmp_path / "whole.mp4", FPS).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    line = _run_failing(tmp_path, capsys, cut, "--frames", "20")
    assert "cannot read video" in line and "truncated" in line


def test_streamable_mp4_cut_in_half(tmp_path, capsys, clip):
    """With the index first the cut file opens, then ends early: the frame count is named."""
    whole = tmp_path / "whole.mp4"
    with imageio.get_writer(str(whole), format="ffmpeg", fps=FPS, codec="libx264", macro_block_size=2,
                            output_params=["-crf", "10", "-movflags", "+faststart"]) as writer:
        for frame in clip:
            writer.append_data((frame * 255 + 0.5).astype(np.uint8))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    line = _run_failing(tmp_path, capsys, cut, "--frames", "30")
    assert "readable frames but start frame 0 + window 30 needs 30" in line and "truncated" in line


def test_one_frame_video(tmp_path, capsys, clip):
    video = write_mp4(clip[:1], tmp_path / "one.mp4", FPS)
    line = _run_failing(tmp_path, capsys, video, "--frames", "20")
    assert "only 1 readable frame" in line


def test_clip_shorter_than_window(tmp_path, capsys, clip):
    video = write_mp4(clip, tmp_path / "short.mp4", FPS)  # 30 frames, default window 150
    line = _run_failing(tmp_path, capsys, video)
    assert "ends after 30 readable frames but start frame 0 + window 150 needs 150" in line
    assert "--frames" in line


def test_start_beyond_the_clip(tmp_path, capsys, clip):
    folder = write_frames_folder(clip[:12], tmp_path / "frames")
    line = _run_failing(tmp_path, capsys, folder, "--start", "10", "--frames", "8")
    assert "ends after 12 readable frames but start frame 10 + window 8 needs 18" in line


def test_zero_byte_video(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "video file is empty" in _run_failing(tmp_path, capsys, empty)


def test_zero_size_frame_in_image_sequence(tmp_path, capsys, clip):
    folder = write_frames_folder(clip[:20], tmp_path / "frames")
    (folder / "0007.png").write_bytes(b"")  # a frame with no pixels
    line = _run_failing(tmp_path, capsys, folder, "--frames", "20")
    assert "image file is empty" in line and "0007.png" in line


def test_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "holds no images" in _run_failing(tmp_path, capsys, tmp_path / "empty")


@pytest.mark.parametrize("options, message", [
    (["--frames", "1"], "--frames must be at least 2"),
    (["--frames", "20", "--bands", "12"], "--bands must be between 1 and 11 for a 20-frame window"),
    (["--frames", "20", "--bands", "0"], "--bands must be between 1 and 11 for a 20-frame window"),
    (["--frames", "20", "--start", "-1"], "start frame must be 0 or later"),
    (["--frames", "20", "--size", "256by160"], "size must look like"),
    (["--frames", "20", "--size", "4x4"], "outside 16..8192"),
    (["--frames", "20", "--size", "64x48", "--width", "64"], "either --size or --width"),
    (["--frames", "20", "--width", "8"], "motion resolution 8x16 is too small"),
    (["--frames", "20", "--fps", "0"], "--fps must be positive"),
])
def test_bad_options(tmp_path, capsys, clip, options, message):
    folder = write_frames_folder(clip[:20], tmp_path / "frames")
    assert message in _run_failing(tmp_path, capsys, folder, *options)


def test_output_must_be_safetensors(tmp_path, capsys, clip):
    folder = write_frames_folder(clip[:20], tmp_path / "frames")
    assert main(["extract", str(folder), "-o", str(tmp_path / "motion.npz"), "--frames", "20"]) == 2
    assert "output must end in .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "motion.npz").exists()


@pytest.mark.slow
def test_exit_status_and_single_line_from_a_real_process(tmp_path):
    """The installed entry point: status 2 and exactly one stderr line, no traceback."""
    out = tmp_path / "m.safetensors"
    done = subprocess.run([sys.executable, "-m", "gdyn_backend", "extract", str(tmp_path / "no.mov"),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gdyn: error: video not found: {tmp_path / 'no.mov'}"]
    assert not out.exists()


def test_extract_writes_the_file_and_reports(tmp_path, capsys, clip):
    """The good path of the same small clip, for contrast: status 0, one summary line."""
    folder = write_frames_folder(clip[:20], tmp_path / "frames")
    out = tmp_path / "sub" / "motion.safetensors"
    assert main(["extract", str(folder), "-o", str(out), "--frames", "20", "--bands", "8",
                 "--size", "64x48", "--force"]) == 0
    assert out.is_file()
    assert capsys.readouterr().out.strip().startswith(f"wrote {out}: 8 bands up to 10.50 Hz, 64x48")

"""`gdyn dataset` on synthetic clips with known motion: pairs, filters, statistics, resume, shards,
parallel jobs, unreadable clips and bad input."""

import json
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
from synthetic import band_motion, make_clip, smooth_envelope, synthetic_still, write_frames_folder, write_mp4

from gdyn_backend import spectral
from gdyn_backend.cli import main
from gdyn_backend.model.data import load_pair

W, H, FPS, WINDOW, STRIDE, FRAMES, K = 64, 48, 30.0, 20, 10, 40, 8
FLAGS = ["--size", f"{W}x{H}", "--window", str(WINDOW), "--stride", str(STRIDE), "--bands", str(K)]


def known_motion():
    """Three bands of the 20-frame window, moving where the envelope is > 0 (part stays still)."""
    motion = band_motion(W, H, FPS, WINDOW, bands=(1, 2, 3), amplitudes_px=(1.5, 0.8, 0.4), seed=3)
    return replace(motion, envelope=smooth_envelope(W, H, seed=3, floor=0.0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    still = synthetic_still(W, H, seed=5)
    write_frames_folder(make_clip(still, known_motion(), FRAMES, FPS), root / "tree")
    camera = band_motion(W, H, FPS, WINDOW, bands=(1,), amplitudes_px=(2.0,), seed=1)
    camera = replace(camera, envelope=np.ones((H, W), np.float32))   # every pixel moves: camera motion
    write_mp4(make_clip(synthetic_still(W, H, seed=6), camera, FRAMES, FPS), root / "pan.mp4", FPS)
    return root


@pytest.fixture(scope="module")
def dataset(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    assert main(["dataset", str(videos), "-o", str(out), *FLAGS]) == 0
    return out


def test_pairs_match_the_known_motion(dataset):
    samples = sorted((dataset / "samples").glob("*.safetensors"))
    assert [p.name for p in samples] == [f"tree-s{s:06d}.safetensors" for s in (0, 10, 20)]
    image, volume = load_pair(samples[0])
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert volume.amplitude.shape == (K, 4, H, W) and volume.period_frames == WINDOW and volume.fps == FPS
    expected = spectral.volume_from_trajectories(known_motion().trajectories(WINDOW, FPS), FPS, K)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))     # flow is weaker at the border
    err = np.abs(volume.amplitude[inner] - expected.amplitude[inner]).mean()
    scale = np.abs(expected.amplitude[inner]).mean()
    print(f"dataset: start-0 volume mean abs error {err:.4f} px vs mean |A| {scale:.4f} px ({err / scale:.1%})")
    assert err < 0.15 * scale, (err, scale)
    # the motion is in bands 1..3; other bands stay small
    energy = np.sqrt((volume.amplitude ** 2).mean(axis=(1, 2, 3)))
    assert energy[1:4].min() > 4 * energy[4:].max()


def test_camera_motion_clip_is_rejected(dataset):
    rejected = sorted((dataset / "rejected").glob("*.json"))
    assert [p.stem for p in rejected] == [f"pan.mp4-s{s:06d}" for s in (0, 10, 20)]
    assert all("camera" in json.loads(p.read_text())["reason"] for p in rejected)


def test_statistics_match_direct_percentiles(dataset):
    scales = spectral.load_normalizer(dataset / "normalization.safetensors").scales
    volumes = [load_pair(p)[1].amplitude for p in sorted((dataset / "samples").glob("*.safetensors"))]
    direct = [np.percentile(np.abs(np.stack(volumes)[:, k]), 97) for k in range(K)]
    np.testing.assert_allclose(scales, np.maximum(direct, 1e-6), rtol=1e-5)


def test_rerun_resumes_without_redoing_work(dataset, videos, capsys):
    samples = sorted((dataset / "samples").glob("*.safetensors"))
    before = {p.name: p.stat().st_mtime_ns for p in samples}
    assert main(["dataset", str(videos), "-o", str(dataset), *FLAGS]) == 0
    assert "0 pairs written" in capsys.readouterr().out          # every clip is marked done
    samples[1].unlink()
    (dataset / "clips" / "tree.json").unlink()                   # as if interrupted inside the clip
    assert main(["dataset", str(videos), "-o", str(dataset), *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "1 pairs written" in out and "2 already done" in out
    after = {p.name: p.stat().st_mtime_ns for p in sorted((dataset / "samples").glob("*.safetensors"))}
    assert after.keys() == before.keys()
    assert all(after[n] == before[n] for n in before if n != samples[1].name)
    assert not list(dataset.rglob(".*partial*"))


def test_shards_split_the_clips(videos, dataset, tmp_path, capsys):
    names = []
    for i in range(2):
        assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), *FLAGS, "--shard", f"{i}/2"]) == 0
        assert "--stats-only" in capsys.readouterr().out
        names.append(sorted(p.stem for p in (tmp_path / "d").glob("*/*") if p.parent.name in ("samples", "rejected")))
    assert names[0] == [f"pan.mp4-s{s:06d}" for s in (0, 10, 20)]             # shard 0: clip 0 (sorted)
    assert len(names[1]) == 6                                                  # shard 1 added clip 1
    assert not (tmp_path / "d" / "normalization.safetensors").exists()
    assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), "--stats-only"]) == 0
    np.testing.assert_allclose(spectral.load_normalizer(tmp_path / "d" / "normalization.safetensors").scales,
                               spectral.load_normalizer(dataset / "normalization.safetensors").scales, rtol=1e-5)


def test_bad_input_is_one_line_error(tmp_path, capsys, videos):
    assert main(["dataset", str(tmp_path / "nope"), "-o", str(tmp_path / "d")]) == 2
    assert "videos folder not found" in capsys.readouterr().err
    assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), "--shard", "2/2"]) == 2
    assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), "--window", "10", "--bands", "9"]) == 2
    assert "--bands" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def four_clips(tmp_path_factory):
    """Four 40-frame clips of known motion (two folders of frames, two MP4s)."""
    root = tmp_path_factory.mktemp("four")
    for i in range(4):
        clip = make_clip(synthetic_still(W, H, seed=10 + i), known_motion(), FRAMES, FPS)
        if i % 2:
            write_mp4(clip, root / f"clip{i}.mp4", FPS)
        else:
            write_frames_folder(clip, root / f"clip{i}")
    return root


def _files(folder) -> dict[str, object]:
    """Every file's bytes; for a .safetensors file its parsed header and its data bytes, because the
    safetensors writer (Rust) orders the header's metadata by a per-process hash: two runs of the
    same process, or of one process twice, write the same keys and values in another order."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            size = int.from_bytes(data[:8], "little")
            data = (json.loads(data[8:8 + size]), data[8 + size:])
        files[path.relative_to(folder).as_posix()] = data
    return files


@pytest.mark.slow
def test_jobs_write_the_same_files_as_one_process(four_clips, tmp_path, capsys):
    """`--jobs 2`: two worker processes, one progress bar, the same files (the flow is
    deterministic and every file is written by the one clip it belongs to): byte-identical, but
    for the key order of safetensors headers (see `_files`)."""
    times = {}
    for jobs in (1, 2):
        start = time.perf_counter()
        assert main(["dataset", str(four_clips), "-o", str(tmp_path / f"j{jobs}"), *FLAGS, "--jobs", str(jobs)]) == 0
        times[jobs] = time.perf_counter() - start
        out, err = capsys.readouterr()
        assert "12 pairs written" in out and "4 clips processed" in out
        assert [line for line in err.splitlines() if line.startswith("dataset: ")][-1] == "dataset: 4/4"
    one, two = _files(tmp_path / "j1"), _files(tmp_path / "j2")
    assert len([n for n in one if n.startswith("samples/")]) == 12 and one.keys() == two.keys()
    assert [n for n in one if one[n] != two[n]] == []
    with capsys.disabled():
        print(f"\ndataset of 4 clips (12 pairs): --jobs 1 {times[1]:.1f} s, --jobs 2 {times[2]:.1f} s "
              f"(x{times[1] / times[2]:.2f}; worker start-up included, shared machine)")


def test_unreadable_clip_is_skipped_with_its_reason(four_clips, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(four_clips / "clip0", videos / "clip0")
    (videos / "broken.mp4").write_text("not a video\n")
    assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), *FLAGS]) == 0
    assert "3 pairs written" in capsys.readouterr().out
    reason = json.loads((tmp_path / "d" / "rejected" / "broken.mp4.json").read_text())["reason"]
    assert reason.startswith("cannot read the clip: cannot read video") and "not a video" in reason
    assert not (tmp_path / "d" / "clips" / "broken.mp4.json").exists()       # a rerun tries it again
    assert (tmp_path / "d" / "normalization.safetensors").is_file()


def test_a_file_as_the_videos_folder_says_so(videos, tmp_path, capsys):
    assert main(["dataset", str(videos / "pan.mp4"), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gdyn: error: {videos / 'pan.mp4'} is a file; give the folder that holds the videos (or put the clip in a folder)"
    assert not (tmp_path / "d").exists()


def test_every_window_rejected_names_the_reasons_not_the_command_just_run(videos, tmp_path, capsys):
    only_pan = tmp_path / "pan"
    only_pan.mkdir()
    shutil.copy(videos / "pan.mp4", only_pan)
    assert main(["dataset", str(only_pan), "-o", str(tmp_path / "d"), *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gdyn: error: no training pairs") and "rejected all 3 windows" in err
    assert f"{tmp_path / 'd'}/rejected" in err and "make them with `gdyn dataset`" not in err


def test_bands_default_follows_a_short_window_as_in_extract(videos, tmp_path):
    """No --bands with --window 10: K = 10/2 + 1 = 6, the rule `gdyn extract` uses."""
    assert main(["dataset", str(videos), "-o", str(tmp_path / "d"), "--size", f"{W}x{H}", "--window", "10",
                 "--stride", "20"]) == 0
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["num_bands"] == 6
    _, volume = load_pair(min((tmp_path / "d" / "samples").glob("*.safetensors")))
    assert volume.num_bands == 6

"""Training pairs (start image, spectral volume) from a folder of videos (paper §7.2).

Layout of a data folder:

    DATA/samples/<clip>-s<start>.safetensors   one accepted pair: tensors
        `image` uint8 [H, W, 3] (RGB start frame at the motion resolution) and
        `amplitude` float32 [K, 4, H, W] (pixels); metadata: clip, start frame,
        fps, period_frames, frequencies_hz, motion statistics.
    DATA/rejected/<clip>-s<start>.json         a start the §7.2 filters dropped, and why
    DATA/clips/<clip>.json                     a clip whose every start is done
    DATA/dataset.json                          size, window, stride, K, fps
    DATA/normalization.safetensors             eq. 4's per-band scales s_k

Every 10th frame (`stride`) of a clip is a start; the start and the following
`window - 1` frames give trajectories (flow from the start to each frame,
`gdyn_backend.flow`), whose K lowest temporal bands are the volume. A window
the filters drop (`flow.check_motion`) gets DATA/rejected/<clip>-s<start>.json;
a clip that cannot be read gets DATA/rejected/<clip>.json with the reason, is
not marked done (a rerun tries it again), and the run goes on. Every file
is written atomically, and existing ones are skipped, so an interrupted run
resumes; `shard=(i, n)` processes only clips i, i+n, i+2n, ... of the sorted
list so several jobs can share a collection, and `jobs=N` cuts N clips at a
time in worker processes, with the same files as one process.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from gdyn_backend import spectral
from gdyn_backend.errors import UserError
from gdyn_backend.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, atomic_path, open_video, read_safetensors
from gdyn_backend.progress import Progress

PAIR_FORMAT = "gdyn-training-pair"
NORMALIZATION_FILE = "normalization.safetensors"


@dataclass(frozen=True)
class DatasetConfig:
    """How pairs are cut: motion size W x H (pixels), start stride, window T, K bands.

    fps: frame rate to assume for image-folder clips (video files use their own).
    """

    width: int = 256
    height: int = 160
    stride: int = 10
    window: int = 150
    num_bands: int = spectral.DEFAULT_BANDS
    fps: float = 30.0

    def validate(self) -> None:
        if self.width < 8 or self.height < 8:
            raise UserError(f"--size {self.width}x{self.height} is too small; use at least 8x8")
        if self.stride < 1:
            raise UserError(f"--stride must be at least 1, got {self.stride}")
        if self.window < 2:
            raise UserError(f"--window must be at least 2 frames, got {self.window}")
        if not 1 <= self.num_bands <= self.window // 2 + 1:
            raise UserError(f"--bands must be in 1..{self.window // 2 + 1} for a {self.window}-frame window")
        if not self.fps > 0:
            raise UserError(f"--fps must be positive, got {self.fps}")


@dataclass
class DatasetReport:
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0      # starts already done by an earlier run
    clips: int = 0
    unreadable: int = 0   # clips that could not be read (DATA/rejected/<clip>.json says why)

    def add(self, other: DatasetReport) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def find_clips(videos_dir) -> list[Path]:
    """Video files and image-sequence folders under `videos_dir`, sorted by path."""
    root = Path(videos_dir)
    if root.is_file():
        raise UserError(f"{root} is a file; give the folder that holds the videos (or put the clip in a folder)")
    if not root.is_dir():
        raise UserError(f"videos folder not found: {root}")
    clips = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            clips.append(p)
        elif p.is_dir() and any(c.suffix.lower() in IMAGE_SUFFIXES for c in p.iterdir() if c.is_file()):
            clips.append(p)
    if not clips:
        raise UserError(f"no videos (or folders of frames) found in {root}")
    return clips


def clip_name(root: Path, clip: Path) -> str:
    """A file-name-safe unique name for a clip from its path relative to the videos folder."""
    rel = clip.relative_to(root).as_posix()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON, atomically; makes the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def save_pair(path: Path, image: np.ndarray, volume: spectral.SpectralVolume) -> None:
    """Write one pair: image uint8 [H, W, 3] + the volume's amplitude [K, 4, H, W]."""
    from safetensors.numpy import save_file

    meta = {k: str(v) for k, v in volume.metadata.items()}
    meta.update({"format": PAIR_FORMAT, "fps": repr(float(volume.fps)), "period_frames": str(volume.period_frames),
                 "frequencies_hz": json.dumps([float(f) for f in volume.frequencies_hz])})
    with atomic_path(path) as tmp:
        save_file({"image": np.ascontiguousarray(image, np.uint8),
                   "amplitude": np.ascontiguousarray(volume.amplitude, np.float32)}, str(tmp), meta)


def load_pair(path) -> tuple[np.ndarray, spectral.SpectralVolume]:
    """(image uint8 [H, W, 3], volume) of one sample file."""
    tensors, meta = read_safetensors(path, PAIR_FORMAT, "training pair", "make pairs with `gdyn dataset`")
    image, amplitude = tensors["image"], tensors["amplitude"]
    volume = spectral.SpectralVolume(amplitude, np.array(json.loads(meta["frequencies_hz"])), float(meta["fps"]),
                                     int(meta["period_frames"]), "video")
    return image, volume


def _process_clip(root: Path, clip: Path, out: Path, cfg: DatasetConfig, progress: Progress) -> DatasetReport:
    """Cut one clip into pairs and mark it done in DATA/clips; an unreadable clip is reported
    in DATA/rejected/<clip>.json instead (see the module docstring). Returns what was done."""
    name = clip_name(root, clip)
    report = DatasetReport()
    try:
        fps = _cut_clip(root, clip, out, cfg, report, progress)
    except UserError as exc:
        write_json(out / "rejected" / f"{name}.json", {"clip": clip.relative_to(root).as_posix(),
                                                        "reason": f"cannot read the clip: {exc}"})
        report.unreadable += 1
        return report
    write_json(out / "clips" / f"{name}.json", {"clip": clip.relative_to(root).as_posix(), "fps": fps})
    report.clips += 1
    return report


def _cut_clip(root: Path, clip: Path, out: Path, cfg: DatasetConfig, report: DatasetReport,
              progress: Progress) -> float:
    """Write the pairs and rejections of every start of one clip; returns its frame rate."""
    from gdyn_backend import flow

    name = clip_name(root, clip)
    info, frames = open_video(clip, fps_for_sequences=cfg.fps)
    buffer: deque[np.ndarray] = deque(maxlen=cfg.window)
    try:
        for index, frame in enumerate(frames):
            progress.check()
            h, w = frame.shape[:2]
            interp = cv2.INTER_AREA if cfg.width <= w and cfg.height <= h else cv2.INTER_LINEAR
            buffer.append(cv2.resize(np.ascontiguousarray(frame, np.float32), (cfg.width, cfg.height),
                                     interpolation=interp))
            start = index - cfg.window + 1
            if len(buffer) < cfg.window or start % cfg.stride:
                continue
            stem = f"{name}-s{start:06d}"
            sample, rejected = out / "samples" / f"{stem}.safetensors", out / "rejected" / f"{stem}.json"
            if sample.exists() or rejected.exists():
                report.skipped += 1
                continue
            motion = replace(flow.measure_window(list(buffer), 0, cfg.window, cfg.width, cfg.height),
                             start=start)  # frame numbers in reasons are the clip's
            stats = flow.window_statistics(motion)
            reason = flow.check_motion(stats, cfg.num_bands)
            if reason is not None:
                write_json(rejected, {"clip": clip.name, "start": start, "reason": reason,
                                      **stats.as_metadata()})
                report.rejected += 1
                continue
            meta = {"clip": clip.relative_to(root).as_posix(), "start_frame": str(start),
                    "flow_method": flow.FLOW_METHOD, **stats.as_metadata()}
            volume = spectral.volume_from_trajectories(motion.trajectories, info.fps, cfg.num_bands, "video", meta)
            image = (np.clip(buffer[0], 0, 1) * 255 + 0.5).astype(np.uint8)
            save_pair(sample, image, volume)
            report.accepted += 1
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    return info.fps


def _clip_job(root: Path, clip: Path, out: Path, cfg: DatasetConfig) -> DatasetReport:
    """`_process_clip` in a worker process of `build_dataset` (one OpenCV thread: the workers share the cores)."""
    cv2.setNumThreads(1)
    return _process_clip(root, clip, out, cfg, Progress())


def build_dataset(videos_dir, out_dir, cfg: DatasetConfig = DatasetConfig(), shard: tuple[int, int] = (0, 1),
                  progress: Progress | None = None, jobs: int = 1) -> DatasetReport:
    """Cut every clip of shard (i, n) into pairs under `out_dir` (see module docstring).

    jobs: clips cut at the same time, each in its own worker process (1: in
    this process); the files are the same either way (the flow is deterministic).
    With a single shard (n = 1) the normalization statistics are computed at
    the end over all samples in `out_dir`; with several shards run
    `compute_statistics` (`gdyn dataset --stats-only`) once all are done.
    """
    cfg.validate()
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard must be i/n with 0 <= i < n, got {index}/{count}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    root, out = Path(videos_dir), Path(out_dir)
    clips = find_clips(root)[index::count]
    for sub in ("samples", "rejected", "clips"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _check_or_write_config(out, cfg)
    progress = progress or Progress()
    report = DatasetReport()
    progress.start("dataset", len(clips))
    pending = [clip for clip in clips if not (out / "clips" / f"{clip_name(root, clip)}.json").exists()]
    progress.advance(len(clips) - len(pending))
    if jobs == 1 or len(pending) < 2:
        for clip in pending:
            report.add(_process_clip(root, clip, out, cfg, progress))
            progress.advance()
    else:
        with ProcessPoolExecutor(min(jobs, len(pending)), multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_clip_job, root, clip, out, cfg) for clip in pending]
            try:
                for future in as_completed(futures):
                    report.add(future.result())
                    progress.advance()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    if count == 1:
        if not any((out / "samples").glob("*.safetensors")):
            raise UserError(no_pairs_reason(out))
        compute_statistics(out)
    return report


def no_pairs_reason(data_dir) -> str:
    """Why DATA holds no training pairs, and what to do (one line)."""
    rejected = len(list((Path(data_dir) / "rejected").glob("*.json")))
    if rejected:
        return (f"no training pairs in {data_dir}: the filters rejected all {rejected} windows or clips "
                f"(reasons in {data_dir}/rejected/*.json); use clips of things swaying in front of a "
                "still camera, or other --window/--stride/--bands")
    return f"no training pairs in {data_dir}/samples; make them with `gdyn dataset VIDEOS_DIR -o {data_dir}`"


def _check_or_write_config(out: Path, cfg: DatasetConfig) -> None:
    path = out / "dataset.json"
    if path.exists():
        old = json.loads(path.read_text())
        mine = asdict(cfg)
        differ = [k for k in mine if k != "fps" and old.get(k) != mine[k]]
        if differ:
            raise UserError(f"{out} was made with other settings ({', '.join(f'{k}={old.get(k)}' for k in differ)}); "
                            "use the same flags to resume, or a new output folder")
        return
    write_json(path, asdict(cfg))


def sample_files(data_dir) -> list[Path]:
    files = sorted((Path(data_dir) / "samples").glob("*.safetensors"))
    if not files:
        raise UserError(no_pairs_reason(data_dir))
    return files


def compute_statistics(data_dir, progress: Progress | None = None) -> spectral.FrequencyNormalizer:
    """Eq. 4's scales (97th percentile of |coefficient| per band) over all samples, saved
    as DATA/normalization.safetensors; the data frame rate goes into dataset.json."""
    files = sample_files(data_dir)
    progress = progress or Progress()
    progress.start("statistics", len(files))
    stats, rates = None, Counter()
    for path in files:
        _, volume = load_pair(path)
        stats = stats or spectral.NormalizationStatistics(volume.num_bands)
        stats.add(volume.amplitude)
        rates[volume.fps] += 1
        progress.advance()
    normalizer = stats.normalizer()
    spectral.save_normalizer(normalizer, Path(data_dir) / NORMALIZATION_FILE)
    config_path = Path(data_dir) / "dataset.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["data_fps"] = rates.most_common(1)[0][0]
    write_json(config_path, config)
    return normalizer


class SpectralPairs:
    """Training pairs as tensors: image float32 [3, H, W] in [-1, 1] and the
    normalized (eq. 4) amplitude float32 [K, 4, H, W]; a map-style dataset for
    torch's DataLoader (this module imports torch only here, so the dataset
    workers of `build_dataset` start without it).

    `info` describes the volumes; its fps is the most common clip frame rate
    (the model's bands are k * fps / T Hz).
    """

    def __init__(self, data_dir):
        from gdyn_backend.model.checkpoint import DataInfo

        self.files = sample_files(data_dir)
        self.normalizer = spectral.load_normalizer(Path(data_dir) / NORMALIZATION_FILE)
        _, volume = load_pair(self.files[0])
        config_path = Path(data_dir) / "dataset.json"
        fps = json.loads(config_path.read_text()).get("data_fps", volume.fps) if config_path.exists() else volume.fps
        self.info = DataInfo(volume.width, volume.height, float(fps), volume.period_frames, volume.num_bands)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        """(image [3, H, W], amplitude [K, 4, H, W]) torch tensors of pair i."""
        import torch

        image, volume = load_pair(self.files[i])
        img = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0
        return img, torch.from_numpy(self.normalizer.normalize(volume.amplitude))

"""Spectral volumes: the one motion format of gdyn (README.md, "The spectral volume file").

A spectral volume holds K complex amplitude maps per axis. For a pixel p the
forward displacement at time t seconds is

    F_t(p) = Re( sum_k A_k(p) * exp(2*pi*i * f_k * t) )        [pixels]

with `f_k` in Hz. Extracted from T frames at `fps`, f_k = k * fps / T and the
one-sided amplitudes are A_0 = X_0 / T, A_k = 2 X_k / T (X = numpy's FFT over
the T frames; the Nyquist bin of an even T keeps X / T). The pixel at p in
the still is at p + F_t(p) in frame t (x right, y down).

Array layout everywhere: `amplitude` float32 [K, 4, H, W], channels
(Re x, Im x, Re y, Im y), in pixels of the motion resolution (W x H).

This module also owns what is derived directly from the representation:
motion textures at any (fractional) times, anchoring so frame 0 is the still,
amplitude and tempo changes, exact loops, resampling to another resolution,
the motion-magnitude weights of the renderer, the safetensors file format and
the frequency adaptive normalization of the model (paper eq. 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gdyn_backend.errors import UserError

FORMAT_NAME = "gdyn-spectral-volume"
FORMAT_VERSION = "1"
DEFAULT_BANDS = 16
NORMALIZATION_PERCENTILE = 97.0
MAX_MOTION_SIDES = 100  # `implausible`: no pixel moves more than 100 times the motion's larger side


@dataclass(frozen=True)
class SpectralVolume:
    """K complex displacement modes of one still.

    amplitude:      float32 [K, 4, H, W], (Re x, Im x, Re y, Im y), pixels.
    frequencies_hz: float64 [K], frequency of each band in Hz (band 0 is 0 Hz).
    fps:            frame rate the volume was made at (frames per second).
    period_frames:  T, the window length the bands were taken from (frames).
    source:         what produced it: "video", "procedural", "model", ...
    metadata:       further string metadata kept through save/load.
    """

    amplitude: np.ndarray
    frequencies_hz: np.ndarray
    fps: float
    period_frames: int
    source: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        amp = np.ascontiguousarray(self.amplitude, dtype=np.float32)
        freqs = np.asarray(self.frequencies_hz, dtype=np.float64).reshape(-1)
        if amp.ndim != 4 or amp.shape[1] != 4:
            raise ValueError(f"amplitude must be [K, 4, H, W], got {amp.shape}")
        if freqs.shape[0] != amp.shape[0]:
            raise ValueError(f"{freqs.shape[0]} frequencies for {amp.shape[0]} bands")
        object.__setattr__(self, "amplitude", amp)
        object.__setattr__(self, "frequencies_hz", freqs)

    @property
    def num_bands(self) -> int:
        return self.amplitude.shape[0]

    @property
    def height(self) -> int:
        return self.amplitude.shape[2]

    @property
    def width(self) -> int:
        return self.amplitude.shape[3]

    def complex_modes(self) -> np.ndarray:
        """Complex amplitudes, complex64 [K, 2, H, W] (axis 1: x, y), pixels."""
        a = self.amplitude
        return (a[:, 0::2] + 1j * a[:, 1::2]).astype(np.complex64)

    def with_amplitude(self, amplitude: np.ndarray, **changes) -> "SpectralVolume":
        """A copy with new amplitudes (and any other field changes)."""
        return replace(self, amplitude=amplitude, **changes)


def from_complex_modes(modes: np.ndarray, frequencies_hz, fps: float, period_frames: int,
                       source: str, metadata: dict[str, str] | None = None) -> SpectralVolume:
    """Build a volume from complex modes [K, 2, H, W] (axis 1: x, y) in pixels."""
    modes = np.asarray(modes)
    k, _, h, w = modes.shape
    amp = np.empty((k, 4, h, w), np.float32)
    amp[:, 0::2] = modes.real
    amp[:, 1::2] = modes.imag
    return SpectralVolume(amp, np.asarray(frequencies_hz, np.float64), float(fps),
                          int(period_frames), source, dict(metadata or {}))


# ---------------------------------------------------------------------------
# Trajectories <-> volume <-> motion texture


def band_frequencies(num_bands: int, fps: float, period_frames: int) -> np.ndarray:
    """f_k = k * fps / T for k < K, float64 [K] in Hz."""
    return np.arange(num_bands, dtype=np.float64) * float(fps) / int(period_frames)


def volume_from_trajectories(trajectories: np.ndarray, fps: float,
                             num_bands: int = DEFAULT_BANDS, source: str = "video",
                             metadata: dict[str, str] | None = None) -> SpectralVolume:
    """Temporal FFT of forward displacements, keeping the K lowest bands.

    trajectories: [T, 2, H, W] forward displacement of every pixel of frame 0
                  at frames 0..T-1, pixels (axis 1: x, y).
    fps:          frame rate of the trajectories (frames per second).
    num_bands:    K, at most T // 2 + 1 (then the round trip is exact).
    """
    traj = np.asarray(trajectories, dtype=np.float64)
    if traj.ndim != 4 or traj.shape[1] != 2:
        raise ValueError(f"trajectories must be [T, 2, H, W], got {traj.shape}")
    t = traj.shape[0]
    if not 1 <= num_bands <= t // 2 + 1:
        raise ValueError(f"num_bands must be in 1..{t // 2 + 1} for T={t}, got {num_bands}")
    spectrum = np.fft.rfft(traj, axis=0)[:num_bands]  # [K, 2, H, W] complex
    scale = np.full(num_bands, 2.0 / t)
    scale[0] = 1.0 / t
    if t % 2 == 0 and num_bands == t // 2 + 1:
        scale[-1] = 1.0 / t  # the Nyquist bin has no mirror image
    modes = spectrum * scale[:, None, None, None]
    return from_complex_modes(modes, band_frequencies(num_bands, fps, t), fps, t, source, metadata)


def _mixing_matrix(frequencies_hz, times_s, anchored: bool) -> np.ndarray:
    """float32 [N*2, K*4]: row (t, axis) weights that axis's (Re, Im) of every band.

    F_t = sum_k cos(2 pi f_k t) Re(A_k) - sin(2 pi f_k t) Im(A_k); anchored
    subtracts F at t = 0 (cos - 1), so frame 0 is the still.
    """
    phase = 2.0 * np.pi * np.outer(np.atleast_1d(np.asarray(times_s, np.float64)),
                                   np.asarray(frequencies_hz, np.float64))
    cos, sin = np.cos(phase), np.sin(phase)
    if anchored:
        cos = cos - 1.0
    n, k = phase.shape
    mixing = np.zeros((n, 2, k, 4), np.float32)
    mixing[:, 0, :, 0], mixing[:, 0, :, 1] = cos, -sin
    mixing[:, 1, :, 2], mixing[:, 1, :, 3] = cos, -sin
    return mixing.reshape(n * 2, k * 4)


def texture_from_amplitudes(amplitude, frequencies_hz, times_s, anchored: bool = True):
    """Forward displacements from raw amplitudes, numpy or torch (differentiable).

    amplitude:      [..., K, 4, H, W] (Re x, Im x, Re y, Im y), pixels; a numpy
                    array or a torch tensor (the model's loop guidance takes
                    gradients through this).
    frequencies_hz: [K] Hz; times_s: [N] seconds.
    Returns [..., N, 2, H, W] in pixels, of the same kind as `amplitude`.
    """
    mixing = _mixing_matrix(frequencies_hz, times_s, anchored)
    *lead, k, _, h, w = amplitude.shape
    if not isinstance(amplitude, np.ndarray):
        import torch

        mixing = torch.as_tensor(mixing, dtype=amplitude.dtype, device=amplitude.device)
    # One matrix product on the [K*4, HW] amplitudes (no transposed copy).
    out = mixing @ amplitude.reshape(*lead, k * 4, h * w)
    return out.reshape(*lead, -1, 2, h, w)


def displacement_at(volume: SpectralVolume, time_s: float, anchored: bool = True) -> np.ndarray:
    """Forward displacement at one time, float32 [2, H, W] in pixels (x, y).

    anchored: subtract F at t = 0 so that frame 0 is exactly the input still
              (the truncated band sum of a real trajectory is only close to 0
              there); velocities and loops are unchanged by this constant.
    """
    return motion_texture(volume, np.array([time_s]), anchored)[0]


def displacements(volume: SpectralVolume, times_s, anchored: bool = True, chunk: int = 16):
    """Forward displacements at many times, yielded one float32 [2, H, W] (pixels) at a time.

    They are computed `chunk` at a time (one matrix product reads the whole
    volume, so 16 frames cost about as much as one: 13 ms a frame becomes about
    1 ms at 384x240 on the 2-core machine); memory holds `chunk` frames at most.
    """
    times_s = np.atleast_1d(np.asarray(times_s, np.float64))
    for start in range(0, times_s.size, chunk):
        yield from motion_texture(volume, times_s[start:start + chunk], anchored)


def motion_texture(volume: SpectralVolume, times_s, anchored: bool = True) -> np.ndarray:
    """Forward displacements at many times, float32 [N, 2, H, W] in pixels.

    times_s: [N] times in seconds; fractional frame times give slow motion.
    Memory is N * 2 * H * W floats: stream long animations with
    `displacement_at` instead.
    """
    return texture_from_amplitudes(volume.amplitude, volume.frequencies_hz, times_s, anchored)


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Times in seconds of frames 0..N-1 at `fps`, float64 [N]."""
    return np.arange(int(num_frames), dtype=np.float64) / float(fps)


def mean_displacement_magnitude(volume: SpectralVolume, num_samples: int | None = None) -> np.ndarray:
    """Splatting weight W(p) = mean_t |F_t(p)| (paper §5), float32 [H, W] in pixels.

    Averaged over `num_samples` times spread evenly over one period of the
    lowest non-zero band (default: the volume's own T frames).
    """
    n = int(num_samples or volume.period_frames)
    positive = volume.frequencies_hz[volume.frequencies_hz > 0]
    period_s = 1.0 / positive.min() if positive.size else 1.0
    times = np.arange(n) * (period_s / n)
    total = np.zeros((volume.height, volume.width), np.float32)
    for start in range(0, n, 16):  # bounded memory at any resolution
        chunk = motion_texture(volume, times[start:start + 16])
        total += np.sqrt((chunk ** 2).sum(axis=1)).sum(axis=0)
    return total / n


# ---------------------------------------------------------------------------
# Edits: size, tempo, loops, resolution


def scaled(volume: SpectralVolume, amplitude: float) -> SpectralVolume:
    """Magnify (>1) or minify (<1) the motion (paper §6.1)."""
    return volume.with_amplitude(volume.amplitude * np.float32(amplitude))


def retimed(volume: SpectralVolume, speed: float) -> SpectralVolume:
    """Play the motion `speed` times faster (every frequency times speed)."""
    if not speed > 0:
        raise UserError(f"speed must be positive, got {speed}")
    return replace(volume, frequencies_hz=volume.frequencies_hz * float(speed))


def loop_frequencies(frequencies_hz: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Snap every non-zero frequency to a whole number (>= 1) of cycles in N frames.

    The loop lasts N / fps seconds; frame N then equals frame 0 in position and
    velocity for every band, for any N and fps. Returns float64 [K] in Hz.
    """
    if num_frames < 2:
        raise UserError(f"a loop needs at least 2 frames, got {num_frames}")
    duration = num_frames / float(fps)
    cycles = np.round(np.asarray(frequencies_hz, np.float64) * duration)
    cycles = np.where(np.asarray(frequencies_hz) > 0, np.maximum(cycles, 1.0), 0.0)
    # Stay below Nyquist of the output frame rate so the loop is not aliased.
    cycles = np.minimum(cycles, max(1.0, np.floor((num_frames - 1) / 2)))
    return cycles / duration


def looped(volume: SpectralVolume, num_frames: int, fps: float) -> SpectralVolume:
    """The volume with frequencies snapped so N frames at `fps` loop exactly."""
    return replace(volume, frequencies_hz=loop_frequencies(volume.frequencies_hz, num_frames, fps))


def resample_displacement(displacement: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a displacement field [2, h, w] to [2, height, width], rescaling pixels.

    Bilinear; x values scale by width / w and y values by height / h so the
    result is in pixels of the new resolution.
    """
    import cv2

    _, h, w = displacement.shape
    if (h, w) == (height, width):
        return displacement.astype(np.float32, copy=False)
    out = np.empty((2, height, width), np.float32)
    for axis, factor in ((0, width / w), (1, height / h)):
        out[axis] = cv2.resize(displacement[axis].astype(np.float32), (width, height),
                               interpolation=cv2.INTER_LINEAR) * factor
    return out


def resampled(volume: SpectralVolume, width: int, height: int) -> SpectralVolume:
    """The volume at another motion resolution, amplitudes in the new pixels.

    Each of the K x 4 channels is resized bilinearly; x channels scale by
    width / W and y channels by height / H.
    """
    import cv2

    out = np.empty((volume.num_bands, 4, height, width), np.float32)
    factors = (width / volume.width,) * 2 + (height / volume.height,) * 2
    for band in range(volume.num_bands):
        for ch in range(4):
            out[band, ch] = cv2.resize(volume.amplitude[band, ch], (width, height),
                                       interpolation=cv2.INTER_LINEAR) * factors[ch]
    return volume.with_amplitude(out)


# ---------------------------------------------------------------------------
# File format


def motion_output_path(path) -> Path:
    """Check a motion file name before long work; UserError if it cannot be one."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"output must end in .safetensors, got {path.name}")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name ending in .safetensors")
    return path


def implausible(amplitude: np.ndarray) -> str | None:
    """Why amplitudes [K, 4, H, W] (pixels) cannot be motion, or None when they can.

    Refused: NaN or infinite values, and a peak displacement bound
    max_p sum_k |A_k(p)| (x and y) over `MAX_MOTION_SIDES` times the motion's
    larger side: such motion throws every pixel far out of the frame, and at
    about 1e19 px it overflows the renderer's weights (every frame black).
    """
    if not np.isfinite(amplitude).all():
        return "contains NaN or infinite values"
    a = np.asarray(amplitude, np.float32)
    bound = float((np.hypot(a[:, 0], a[:, 1]) + np.hypot(a[:, 2], a[:, 3])).sum(axis=0).max(initial=0.0))
    height, width = a.shape[2:]
    if not bound <= MAX_MOTION_SIDES * max(height, width):
        return (f"moves pixels by up to {bound:.3g} px, more than {MAX_MOTION_SIDES} times its own "
                f"{width}x{height} size")
    return None


def save_volume(volume: SpectralVolume, path) -> Path:
    """Write the shared safetensors file (making its folder); appears whole or not at all.

    Motion that `implausible` refuses is never written (UserError).
    """
    from safetensors.numpy import save_file

    from gdyn_backend.io import atomic_path

    path = Path(path)
    problem = implausible(volume.amplitude)
    if problem is not None:
        raise UserError(f"not writing {path}: the motion {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(volume.metadata)
    meta.update({
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fps": repr(float(volume.fps)),
        "period_frames": str(int(volume.period_frames)),
        "frequencies_hz": json.dumps([float(f) for f in volume.frequencies_hz]),
        "width": str(volume.width),
        "height": str(volume.height),
        "source": volume.source,
    })
    with atomic_path(path) as tmp:
        # safetensors writes wrong bytes for non-contiguous arrays: copy first.
        save_file({"amplitude": np.ascontiguousarray(volume.amplitude, np.float32)}, str(tmp), meta)
    return path


def load_volume(path) -> SpectralVolume:
    """Read and validate a spectral volume file; UserError on anything wrong.

    Checked: float32 amplitudes [K, 4, H, W], one finite frequency >= 0 Hz per
    band, fps > 0, period_frames >= 1, and amplitudes `implausible` accepts.
    """
    from gdyn_backend.io import read_safetensors

    path = Path(path)
    tensors, meta = read_safetensors(path, FORMAT_NAME, "motion file",
                                     "make one with `gdyn extract`, `gdyn sample` or `gdyn animate`")
    amp = tensors.get("amplitude")
    if amp is None:
        raise UserError(f"{path}: motion file has no `amplitude` tensor")
    if amp.dtype != np.float32:
        raise UserError(f"{path}: amplitudes are {amp.dtype}, a motion file holds float32; "
                        "write it with gdyn_backend.spectral.save_volume")
    try:
        freqs = np.array(json.loads(meta["frequencies_hz"]), np.float64)
        fps, period = float(meta["fps"]), int(meta["period_frames"])
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: broken spectral volume metadata ({type(exc).__name__}: {exc})") from None
    if freqs.ndim != 1:
        raise UserError(f"{path}: frequencies_hz in the metadata must be a list of numbers (Hz), "
                        f"got {meta['frequencies_hz']}")
    if amp.ndim != 4 or amp.shape[1] != 4 or len(freqs) != amp.shape[0]:
        raise UserError(f"{path}: amplitude shape {amp.shape} does not match "
                        f"{freqs.size} frequencies; expected [K, 4, H, W]")
    if not (np.isfinite(freqs).all() and (freqs >= 0).all()):
        raise UserError(f"{path}: band frequencies must be finite and >= 0 Hz, got {meta['frequencies_hz']}")
    if not (np.isfinite(fps) and fps > 0):
        raise UserError(f"{path}: fps in the metadata must be a positive number, got {meta['fps']}")
    if period < 1:
        raise UserError(f"{path}: period_frames in the metadata must be at least 1, got {period}")
    problem = implausible(amp)
    if problem is not None:
        raise UserError(f"{path}: the motion {problem}; the file is damaged or was scaled by mistake")
    known = {"format", "version", "fps", "period_frames", "frequencies_hz", "width", "height", "source"}
    extra = {k: v for k, v in meta.items() if k not in known}
    return SpectralVolume(amp, freqs, fps, period, meta.get("source", "unknown"), extra)


# ---------------------------------------------------------------------------
# Frequency adaptive normalization (paper eq. 4), for the model only


@dataclass(frozen=True)
class FrequencyNormalizer:
    """Per-band scale s_k and x' = sign(x) * sqrt(|x / s_k|) on each real channel.

    scales: float32 [K], the 97th percentile of |coefficient| of band k over a
            training set, in pixels of the motion resolution.
    Works on numpy arrays and torch tensors [..., K, 4, H, W].
    """

    scales: np.ndarray

    def _scale_like(self, x):
        s = np.asarray(self.scales, np.float32).reshape(-1, 1, 1, 1)
        if isinstance(x, np.ndarray):
            return s
        import torch

        return torch.as_tensor(s, dtype=x.dtype, device=x.device)

    def normalize(self, amplitude):
        s = self._scale_like(amplitude)
        if isinstance(amplitude, np.ndarray):
            return (np.sign(amplitude) * np.sqrt(np.abs(amplitude / s))).astype(np.float32)
        return amplitude.sign() * (amplitude / s).abs().sqrt()

    def denormalize(self, normalized):
        s = self._scale_like(normalized)
        if isinstance(normalized, np.ndarray):
            return (np.sign(normalized) * normalized * normalized * s).astype(np.float32)
        return normalized.sign() * normalized * normalized * s

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Tensors to store in a checkpoint (key `normalization_scales`)."""
        return {"normalization_scales": np.ascontiguousarray(self.scales, np.float32)}

    @classmethod
    def from_tensors(cls, tensors) -> "FrequencyNormalizer":
        return cls(np.asarray(tensors["normalization_scales"], np.float32))


class NormalizationStatistics:
    """Accumulates |coefficient| per band over a dataset for the 97th percentile.

    Keeps up to `capacity` values per band (a uniform reservoir sample beyond
    that, seeded), so the percentile is exact for datasets up to `capacity`
    values per band and an unbiased estimate above.
    """

    def __init__(self, num_bands: int = DEFAULT_BANDS, capacity: int = 4_000_000, seed: int = 0):
        self.num_bands, self.capacity = num_bands, capacity
        self._samples = [np.empty(0, np.float32) for _ in range(num_bands)]
        self._seen = np.zeros(num_bands, np.int64)
        self._rng = np.random.default_rng(seed)

    def add(self, amplitude: np.ndarray) -> None:
        """Add one volume's amplitudes [K, 4, H, W]."""
        for k in range(self.num_bands):
            values = np.abs(amplitude[k]).ravel().astype(np.float32)
            self._seen[k] += values.size
            pool = np.concatenate([self._samples[k], values])
            if pool.size > self.capacity:
                keep = self._rng.choice(pool.size, self.capacity, replace=False)
                pool = pool[keep]
            self._samples[k] = pool

    def normalizer(self) -> FrequencyNormalizer:
        if not self._seen.all():
            raise UserError("no motion samples to compute normalization statistics from")
        scales = np.array([np.percentile(s, NORMALIZATION_PERCENTILE) for s in self._samples], np.float32)
        return FrequencyNormalizer(np.maximum(scales, 1e-6))


def save_normalizer(normalizer: FrequencyNormalizer, path) -> Path:
    """Write scales as safetensors (`normalization_scales` [K])."""
    from safetensors.numpy import save_file

    from gdyn_backend.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(normalizer.to_tensors(), str(tmp),
                  {"format": "gdyn-normalization", "percentile": str(NORMALIZATION_PERCENTILE)})
    return path


def load_normalizer(path) -> FrequencyNormalizer:
    """Read scales written by `save_normalizer`; UserError on anything wrong."""
    from gdyn_backend.io import read_safetensors

    tensors, _ = read_safetensors(path, "gdyn-normalization", "normalization statistics file",
                                  "make it with `gdyn dataset`")
    return FrequencyNormalizer.from_tensors(tensors)

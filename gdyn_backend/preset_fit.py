"""Fit a motion preset to the motion of a real clip (`gdyn preset --from-video`).

The clip's spectral volume (`gdyn_backend.flow.extract_volume`) is measured
on its moving pixels, the 30 % with the most motion energy sum_k>=1 |A_k|^2
(the still background would only dilute it), and turned into the keys of
`gdyn_backend.presets`:

* spectrum: band k's RMS displacement over the moving pixels,
  sqrt(mean |A_k|^2 / 2), in pixels of a still whose long side is 512 px
  (the flow's noise on still pixels, about 0.01 px a band on the test
  clips, is left in). Written as the table `spectrum_hz` /
  `spectrum_amplitude` (relative to its largest value), which the prior then
  follows; `band_hz`, `damping` and `decay_hz` are the least-squares fit of
  the prior's own resonance x exponential shape to it (`fit_envelope`).
* amplitude_px: the RMS over time of the moving pixels' displacement,
  sqrt(sum_k>=1 of the band energies / 2), at 512 px.
* direction_deg and direction_bias: the principal axis of the 2x2 motion
  covariance sum_k,p Re(a a^H) of a = (A_k,x, A_k,y) over the moving
  pixels, and bias = sqrt(1 - minor / major) (the prior's motion along the
  wind has variance 1, across it 1 - bias^2).
* coherence: the distance at which the spatial autocorrelation of the
  strongest band's complex field, over the moving pixels, falls to one
  half, divided by the long side and by HALF_CORRELATION (the same
  distance, per grid spacing, of the prior's own random fields).

Everything else (what moves, stiffness, variation, label) comes from a base
preset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gdyn_backend import spectral
from gdyn_backend.errors import UserError
from gdyn_backend.presets import REFERENCE_SIZE_PX, Preset

MOVING_SHARE = 0.3  # the most-moving share of the pixels that is measured
HALF_CORRELATION = 0.67  # half-correlation distance of procedural._smooth_noise per grid spacing (measured 0.66-0.68)
MAX_DECAY_HZ = 10.0


@dataclass(frozen=True)
class ClipMotion:
    """What a clip's spectral volume shows, in the units of a preset.

    frequencies_hz: float64 [K-1], bands 1..K-1 in Hz.
    band_rms_px:    float64 [K-1], RMS displacement per band at 512 px.
    amplitude_px:   RMS displacement over time, pixels at 512 px.
    direction_deg:  principal axis of the motion, degrees in (-90, 90] (0 = x, 90 = y).
    direction_bias: sqrt(1 - minor / major variance), 0..1.
    coherence:      spatial correlation length as a fraction of the long side, 0..1.
    """

    frequencies_hz: np.ndarray
    band_rms_px: np.ndarray
    amplitude_px: float
    direction_deg: float
    direction_bias: float
    coherence: float


def half_correlation_px(field: np.ndarray, mask: np.ndarray) -> float:
    """Distance in pixels at which the autocorrelation of `field` over `mask` falls to 0.5.

    field: complex [H, W]; mask: bool [H, W]. The normalized autocorrelation
    C(d) = sum_p f(p) f*(p+d) / sum_p |f(p)|^2 over pixel pairs both in the
    mask (FFT, zero padded) is averaged over rings of radius |d|.
    """
    h, w = field.shape
    weights = mask.astype(np.float64)
    values = np.where(mask, field - field[mask].mean(), 0.0)
    size = (2 * h, 2 * w)
    spectrum = np.fft.fft2(values, size)
    pairs = np.fft.ifft2(np.abs(np.fft.fft2(weights, size)) ** 2).real
    correlation = np.fft.ifft2(np.abs(spectrum) ** 2).real / np.maximum(pairs, 1.0)
    correlation = correlation / max(correlation[0, 0], 1e-30)
    dy = np.minimum(np.arange(size[0]), size[0] - np.arange(size[0]))[:, None]
    dx = np.minimum(np.arange(size[1]), size[1] - np.arange(size[1]))[None, :]
    radius = np.round(np.sqrt(dy * dy + dx * dx)).astype(int)
    valid = pairs > 0.25 * weights.sum()  # enough pairs to trust the estimate
    count = np.bincount(radius[valid], minlength=max(h, w))
    ring = np.bincount(radius[valid], correlation[valid], minlength=max(h, w)) / np.maximum(count, 1)
    below = np.nonzero((ring < 0.5) & (count > 0))[0]
    if below.size == 0:
        return float(max(h, w))
    r = int(below[0])
    if r == 0:
        return 0.0
    previous = ring[r - 1]  # interpolate the crossing between r - 1 and r
    return float(r - 1 + (previous - 0.5) / max(previous - ring[r], 1e-9))


def measure_volume(volume: spectral.SpectralVolume, moving_share: float = MOVING_SHARE) -> ClipMotion:
    """The preset-relevant figures of an extracted (or any) spectral volume (module docstring).

    moving_share: the share of the pixels measured, those with the most motion
    energy (1 = all of them, for a volume that moves everywhere).
    """
    if volume.num_bands < 3:
        raise UserError(f"a preset needs at least 3 frequency bands to fit, the clip gave {volume.num_bands}")
    modes = volume.complex_modes()[1:].astype(np.complex128)  # [K-1, 2, H, W], band 0 is the offset
    energy = (np.abs(modes) ** 2).sum(axis=1)  # [K-1, H, W]
    total = energy.sum(axis=0)
    moving = total >= np.quantile(total, 1.0 - moving_share)
    if not total[moving].max() > 0:
        raise UserError("the clip shows no motion to fit a preset to")
    scale = REFERENCE_SIZE_PX / max(volume.width, volume.height)
    band_energy = energy[:, moving].mean(axis=1)
    band_rms = np.sqrt(band_energy / 2.0) * scale
    a = modes[:, :, moving]  # [K-1, 2, P]
    covariance = np.array([[np.sum(np.abs(a[:, 0]) ** 2), np.sum((a[:, 0] * np.conj(a[:, 1])).real)],
                           [np.sum((a[:, 0] * np.conj(a[:, 1])).real), np.sum(np.abs(a[:, 1]) ** 2)]])
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    major = eigenvectors[:, 1]
    angle = float(np.degrees(np.arctan2(major[1], major[0])))
    angle = angle - 180.0 if angle > 90.0 else angle + 180.0 if angle <= -90.0 else angle
    bias = float(np.sqrt(np.clip(1.0 - eigenvalues[0] / max(eigenvalues[1], 1e-30), 0.0, 1.0)))
    strongest = int(np.argmax(band_energy))
    field = major[0] * modes[strongest, 0] + major[1] * modes[strongest, 1]  # along the major axis
    length = half_correlation_px(field, moving)
    coherence = float(np.clip(length / (HALF_CORRELATION * max(volume.width, volume.height)), 0.01, 1.0))
    return ClipMotion(volume.frequencies_hz[1:].copy(), band_rms, float(np.sqrt(np.sum(band_rms ** 2))),
                      angle, bias, coherence)


def _envelope(f: np.ndarray, low: float, high: float, damping: float, decay: float) -> np.ndarray:
    """The prior's spectral shape for these parameters (procedural.spectral_envelope), float64 [K]."""
    from gdyn_backend.sources.procedural import spectral_envelope

    shape = Preset("fit", "", "", "plants", 1.0, (low, high), decay, damping, 0.0, 0.0, 0.5, 0.0, 0.0)
    return spectral_envelope(f, shape)


def fit_envelope(frequencies_hz: np.ndarray, band_rms: np.ndarray,
                 paper_fall: bool = False) -> tuple[tuple[float, float], float, float]:
    """Least-squares fit of the prior's resonance x exponential shape to measured band amplitudes.

    Minimizes the energy-weighted squared difference of log amplitudes (an
    overall factor is free) over band_hz = (lo, hi), damping and decay_hz.
    paper_fall: also require what the shipped presets keep (paper fig. 2,
    tests/test_procedural.py): on 0.2..3 Hz the amplitude at 3 Hz is under
    0.08 of its peak and log amplitude falls by more than 0.6 per Hz above
    lo. Returns ((lo, hi), damping, decay_hz).
    """
    from scipy.optimize import minimize

    f = np.asarray(frequencies_hz, np.float64)
    amplitude = np.asarray(band_rms, np.float64)
    use = amplitude > 0.02 * amplitude.max()
    weights = (amplitude[use] / amplitude.max()) ** 2
    grid = np.linspace(0.2, 3.0, 15)

    def unpack(x):
        low = float(np.exp(x[0]))
        return low, low * (1.0 + float(np.exp(x[1]))), float(np.clip(x[2], 0.05, 1.0)), float(np.exp(x[3]))

    def cost(x):
        low, high, damping, decay = unpack(x)
        model = np.log(np.maximum(_envelope(f[use], low, high, damping, decay), 1e-12))
        residual = model - np.log(amplitude[use])
        residual -= np.sum(weights * residual) / weights.sum()
        value = float(np.sum(weights * residual ** 2))
        if paper_fall:
            curve = _envelope(grid, low, high, damping, decay)
            above = grid >= low
            slope = np.polyfit(grid[above], np.log(curve[above]), 1)[0] if above.sum() >= 2 else -1.0
            value += 1e4 * (max(0.0, curve[-1] / curve.max() - 0.08) ** 2 + max(0.0, slope + 0.6) ** 2)
        return value

    peak = float(f[np.argmax(amplitude)])
    best = None
    for start_low in (0.7 * peak, peak, 1.5 * peak):
        for start_decay in (0.5, 2.0):
            x0 = np.array([np.log(max(start_low, 0.02)), np.log(1.0), 0.3, np.log(start_decay)])
            result = minimize(cost, x0, method="L-BFGS-B",
                              bounds=[(np.log(0.02), np.log(20.0)), (np.log(0.05), np.log(20.0)),
                                      (0.05, 1.0), (np.log(0.05), np.log(MAX_DECAY_HZ))])
            if best is None or result.fun < best.fun:
                best = result
    low, high, damping, decay = unpack(best.x)
    return (low, high), damping, decay


def fit_preset(motion: ClipMotion, base: Preset, name: str, label: str, description: str) -> Preset:
    """A preset that moves like `motion`: its measured spectrum, size, direction and coherence.

    `base` gives what_moves, stiffness and variation. band_hz, damping and
    decay_hz are the least-squares fit of the prior's shape (`fit_envelope`);
    decay_hz also extends the measured spectrum above its last band.
    """
    f, amplitude = motion.frequencies_hz, motion.band_rms_px
    (low, high), damping, decay = fit_envelope(f, amplitude)
    relative = amplitude / amplitude.max()
    return replace(base, name=name, label=label, description=description,
                   amplitude_px=round(float(motion.amplitude_px), 3), band_hz=(round(low, 3), round(high, 3)),
                   decay_hz=round(decay, 3), damping=round(damping, 3),
                   direction_deg=round(motion.direction_deg, 1), direction_bias=round(motion.direction_bias, 3),
                   coherence=round(motion.coherence, 3),
                   spectrum_hz=tuple(round(float(v), 4) for v in f),
                   spectrum_amplitude=tuple(round(float(v), 4) for v in relative))

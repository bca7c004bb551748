"""The default motion source: a physically shaped spectral prior, no weights.

`sample_volume` turns a still and a `Preset` into a spectral volume
([K, 4, H, W], pixels of the motion resolution) the same way for everyone
who has no trained model. It follows what the paper measured and the older
work it builds on:

* Spectrum (paper fig. 2; Chuang et al. 2005 "stochastic motion
  textures"): each point is a damped oscillator driven by random wind, so
  band k gets the amplitude |H(f_k)| * exp(-(f_k - lo) / decay) with the
  resonance |H(f)| = 1 / sqrt((1 - r^2)^2 + (2 zeta r)^2), r = f / f0, f0 the
  geometric centre of the preset's band [lo, hi] and zeta its damping; below
  lo it rolls off linearly. The amplitude peaks in the band and falls
  roughly exponentially with frequency above it. Band 0 (0 Hz) is 0.
* Space (Davis et al., image-space modal bases): every band is a smooth
  complex random field (white noise upsampled with a bicubic kernel from a
  grid of spacing equal to the correlation length), so motion is coherent
  within an object; low bands are smoother than high ones. Each object (a
  connected blob of the "what moves" map) gets its own phase offset per
  band, gain and wind direction, scaled by the preset's `variation`, so
  neighbouring flowers do not move in lockstep. Objects smaller than 20 %
  of the frame mostly sway as one piece (80 % of each band's field is one
  random value per object), larger ones (a field of plants) bend freely.
  Objects whose extent sqrt(area) is under 15 % of the long side sway
  proportionally less (a small leaf moves by a fraction of its own size).
* Rigid pieces (`RigidPieces`): flower heads ride on their stems as one
  body with a small turn about where the stem joins; a leaf hanging from a
  still twig turns about where the twig meets it. 10 % flutter stays.
* Anchors: amplitude grows from an object's attachment (its lowest row for
  upright plants, its top row for things that hang from the top of the
  frame) to its free end as (height fraction)^1.5, the shape of a bending
  cantilever; `stiffness` sets how still the anchor is. Objects that touch
  no edge of the frame move as a whole.
* What moves: `gdyn_backend.segmentation.analyze` (colour, texture, focus,
  superpixels, what blooms are attached to, rigid cues; `what_moves` gives
  the map); a user mask replaces it (`mask > 0` may move); fully
  transparent pixels never move.

Amplitudes: a free pixel at the top of its object has an RMS displacement
over time of `preset.amplitude_px` pixels per 512 px of the still's long
side. Same still, preset, mask and seed give the same volume bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np

from gdyn_backend import spectral
from gdyn_backend.errors import UserError
from gdyn_backend.io import Still
from gdyn_backend.pinning import motion_mask
from gdyn_backend.presets import REFERENCE_SIZE_PX, Preset
from gdyn_backend.progress import Progress
from gdyn_backend.segmentation import MotionRegions, analyze, connected_objects

MOTION_SIZE_PX = 384  # long side of the motion resolution (never above the still's)
ANCHOR_EXPONENT = 1.5  # amplitude ~ (height above anchor / object height) ** 1.5
RIGIDITY = 0.8  # share of a small object's motion that is one rigid sway for the whole object
LARGE_OBJECT_FRACTION = 0.2  # objects above this share of the frame (a field, a hedge) bend freely
SMALL_OBJECT_EXTENT = 0.15  # objects smaller than this (sqrt(area) / long side) move proportionally less
TURN_SHARE = 0.3  # a carried piece's turn about its hinge moves its far end by this share of the hinge's sway
FLUTTER = 0.1  # share of the surrounding motion's own variation kept inside a rigid piece


def motion_resolution(width: int, height: int, motion_size: int = MOTION_SIZE_PX) -> tuple[int, int]:
    """(w, h) of the motion maps: long side min(motion_size, still's), aspect kept."""
    scale = min(1.0, motion_size / max(width, height))
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def spectral_envelope(frequencies_hz: np.ndarray, preset: Preset) -> np.ndarray:
    """Relative amplitude of each band, float64 [K] (unnormalized; 0 at 0 Hz).

    With lo, hi = preset.band_hz and f0 = sqrt(lo * hi): the damped-oscillator
    resonance |H(f)| at f0 with damping ratio `preset.damping`, times
    exp(-(f - lo) / decay_hz) above lo (the exponential fall of paper fig. 2)
    and a linear roll-off f / lo below it (slower drifts would read as the
    object sliding, not swaying). A preset with a measured spectrum
    (`spectrum_hz`, `spectrum_amplitude`) follows it instead: linear between
    its points, f / f1 below the first, exp(-(f - f_last) / decay_hz) above
    the last.
    """
    f = np.asarray(frequencies_hz, np.float64)
    if preset.spectrum_hz is not None:
        hz, table = np.asarray(preset.spectrum_hz), np.asarray(preset.spectrum_amplitude)
        inside = np.interp(f, hz, table)
        below = table[0] * f / hz[0]
        above = table[-1] * np.exp(-(f - hz[-1]) / preset.decay_hz)
        return np.where(f <= 0, 0.0, np.where(f < hz[0], below, np.where(f > hz[-1], above, inside)))
    low, high = preset.band_hz
    r = f / np.sqrt(low * high)
    response = 1.0 / np.sqrt((1.0 - r * r) ** 2 + (2.0 * preset.damping * r) ** 2)
    shape = np.minimum(1.0, f / low) * np.exp(-np.maximum(f - low, 0.0) / preset.decay_hz)
    return np.where(f > 0, response * shape, 0.0)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, length_px: float) -> np.ndarray:
    """Complex Gaussian random field [H, W] with correlation length ~length_px, unit RMS."""
    length = max(1.0, length_px)
    gw, gh = int(np.ceil(width / length)) + 3, int(np.ceil(height / length)) + 3
    grid = rng.standard_normal((2, gh, gw)).astype(np.float32)
    # Upsample the grid so that one grid cell spans `length` pixels, centred.
    big_w, big_h = int(round(gw * length)), int(round(gh * length))
    x0, y0 = (big_w - width) // 2, (big_h - height) // 2
    field = np.empty((2, height, width), np.float32)
    for part in range(2):
        up = cv2.resize(grid[part], (big_w, big_h), interpolation=cv2.INTER_CUBIC)
        field[part] = up[y0:y0 + height, x0:x0 + width]
    noise = field[0] + 1j * field[1]
    return noise / max(float(np.sqrt(np.mean(np.abs(noise) ** 2))), 1e-6)


def anchor_profile(objects: np.ndarray, stiffness: float, rooted: bool = False) -> np.ndarray:
    """Amplitude factor from anchors, float32 [H, W] in (1 - stiffness)..1.

    Per object, the height fraction (0 at the anchor, 1 at the free end)
    raised to ANCHOR_EXPONENT: objects touching the bottom of the frame stand
    on it (anchor = lowest row); objects touching only the top hang from it
    (anchor = top row); free-floating objects (a leaf on an invisible twig)
    move as a whole, unless `rooted` (flames rise from their wick: anchor =
    lowest row). Pixels outside objects get half of the free motion.
    """
    h, _ = objects.shape
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones_like(objects, np.float32)
    fraction = np.full(objects.shape, 0.5 ** (1.0 / ANCHOR_EXPONENT), np.float32)
    for label in range(1, int(objects.max(initial=0)) + 1):
        inside = objects == label
        ys = np.nonzero(inside.any(axis=1))[0]
        top, bottom = float(ys[0]), float(ys[-1])
        span = max(bottom - top, 1.0)
        if bottom == h - 1 or (rooted and top > 0):
            fraction[inside] = (bottom - rows[inside]) / span
        elif top == 0:
            fraction[inside] = (rows[inside] - top) / span
        else:
            fraction[inside] = 1.0
    return ((1.0 - stiffness) + stiffness * np.clip(fraction, 0, 1) ** ANCHOR_EXPONENT).astype(np.float32)


def _object_table(rng: np.random.Generator, count: int, num_bands: int, preset: Preset):
    """Per object (index 0 = pixels outside objects): phase [n, K], gain [n], angle [n]."""
    n = count + 1
    phase = preset.variation * np.pi * rng.uniform(-1.0, 1.0, (n, num_bands))
    gain = np.exp(0.35 * preset.variation * rng.standard_normal(n))
    angle = np.deg2rad(preset.direction_deg) + preset.variation * (np.pi / 4) * rng.uniform(-1.0, 1.0, n)
    return phase, gain, angle


def what_moves(still: Still, preset: Preset, motion_size: int = MOTION_SIZE_PX) -> np.ndarray:
    """The what-moves map of `still` at the still's own size: float32 [H, W] in 0..1, white moves.

    The analysis `sample_volume` uses without a mask (`regions_for`, at the
    motion resolution for `motion_size`, for `preset.what_moves`), resized
    bilinearly to the still: 1 = free to sway, 0 = pinned; values between
    scale the motion (a defocused object, a grayscale picture, soft edges).
    Transparent pixels are 0.
    """
    width, height = motion_resolution(still.width, still.height, motion_size)
    moveability = regions_for(still, preset, width, height).moveability
    full = cv2.resize(moveability, (still.width, still.height), interpolation=cv2.INTER_LINEAR)
    if still.alpha is not None:
        full = np.where(still.alpha > 0, full, 0.0)
    return np.clip(full, 0.0, 1.0).astype(np.float32)


class RigidPieces:
    """Rigid sway of `MotionRegions.pieces`: each piece turns about its hinge as one body.

    A carried piece (a flower head on a stem: its object stands on the frame)
    moves as a whole with its hinge, along B_k(a) (so the head stays on its
    stem, in phase), plus a small turn about the hinge whose far end moves
    TURN_SHARE of the hinge's sway; the translation is scaled so that the
    piece keeps the base's mean squared motion over it (the wind gives it
    the same energy, it just moves as one). A hinged piece (a whole
    object touching no frame edge: a leaf on a still twig) only turns about
    its hinge, so its motion grows linearly with the distance from it; the
    turn is scaled so that the piece's mean sway equals the sway the base
    field would give it. Both keep FLUTTER of the base field's variation
    (B_k(p) - the piece's rigid motion) as flutter. B_k is the base motion
    (smooth fields, anchors); a turn by the complex angle theta moves p by
    theta * (-(y - a_y), x - a_x).
    """

    def __init__(self, regions: MotionRegions, weight: np.ndarray, feather: float,
                 band_scale: np.ndarray, rng: np.random.Generator):
        pieces, objects = regions.pieces, regions.objects
        h, w = pieces.shape
        count = self.count = regions.num_pieces
        if count == 0:
            return
        # A piece's rim (outside it, where the what-moves map fades out) follows
        # the piece, faded like the base motion would be.
        reach = int(np.ceil(2.0 * feather))
        grown = cv2.dilate(pieces.astype(np.float32), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(np.int32)
        owner = np.where(pieces > 0, pieces, grown * (regions.moveability > 0)).ravel()
        self.where = np.flatnonzero(owner)  # flat indices of the pixels the pieces set
        self.owner = owner[self.where]
        inside = pieces.ravel()[self.where] > 0
        self.inside, self.inside_owner = self.where[inside], self.owner[inside]
        self.sizes = np.maximum(np.bincount(self.inside_owner, minlength=count + 1), 1)
        moveability = regions.moveability.ravel()[self.where]
        typical = self._piece_mean(regions.moveability).real[self.owner]
        self.fade = np.where(inside, 1.0, np.clip(moveability / np.maximum(typical, 1e-6), 0.0, 1.0))
        hinges = np.vstack([np.zeros((1, 2), np.float32), regions.hinges])
        rows, cols = np.divmod(self.where, w)
        self.arm_x = -(rows - hinges[self.owner, 1])  # theta * (-(y - a_y), x - a_x)
        self.arm_y = cols - hinges[self.owner, 0]
        distance = np.hypot(self.arm_x, self.arm_y)
        edge = np.zeros(regions.num_objects + 1, bool)
        edge[np.unique(np.concatenate([objects[0], objects[-1], objects[:, 0], objects[:, -1]]))] = True
        edge[0] = False
        object_of = np.zeros(count + 1, int)
        np.maximum.at(object_of, self.inside_owner, objects.ravel()[self.inside])
        self.carried = edge[object_of].astype(np.float64)
        self.hinge_index = hinge_index = (np.clip(np.round(hinges[:, 1]).astype(int), 0, h - 1) * w
                                          + np.clip(np.round(hinges[:, 0]).astype(int), 0, w - 1))
        far = np.zeros(count + 1)
        np.maximum.at(far, self.owner[inside], distance[inside])
        mean_distance = np.bincount(self.inside_owner, distance[inside], count + 1) / self.sizes
        mean_weight = self._piece_mean(weight).real
        self.turn = np.where(self.carried > 0, TURN_SHARE * weight.ravel()[hinge_index] / np.maximum(far, 1.0),
                             mean_weight / np.maximum(mean_distance, 1.0))
        self.arm_energy = np.bincount(self.inside_owner, distance[inside] ** 2, count + 1) / self.sizes
        # Random turn per band and piece, normalised over the bands so that every
        # piece turns with exactly its expected energy (only phases and the split
        # between bands are random).
        angles = (rng.standard_normal((band_scale.size, count + 1))
                  + 1j * rng.standard_normal((band_scale.size, count + 1))) / np.sqrt(2.0)
        drawn = np.sum((band_scale[:, None] * np.abs(angles)) ** 2, axis=0)
        self.angles = angles * np.sqrt(np.sum(band_scale ** 2) / np.maximum(drawn, 1e-30))

    def _piece_mean(self, values: np.ndarray) -> np.ndarray:
        """Mean of `values` [H, W] (real or complex) over each piece, complex [m + 1] (entry 0 unused)."""
        inside = values.ravel()[self.inside]
        total = np.bincount(self.inside_owner, np.real(inside), self.count + 1).astype(np.complex128)
        if np.iscomplexobj(inside):
            total += 1j * np.bincount(self.inside_owner, np.imag(inside), self.count + 1)
        return total / self.sizes

    def apply(self, mode_x: np.ndarray, mode_y: np.ndarray, band: int,
              band_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Band k's base modes (complex [H, W] per axis, pixels) with the pieces made rigid."""
        if self.count == 0:
            return mode_x, mode_y
        theta = band_scale * self.turn * self.angles[band]
        joints = [mode.ravel()[self.hinge_index] for mode in (mode_x, mode_y)]
        energy = sum(self._piece_mean(np.abs(mode) ** 2).real for mode in (mode_x, mode_y))
        # The carried translation takes the base's energy over the piece that the turn leaves.
        left = np.maximum(energy - np.abs(theta) ** 2 * self.arm_energy, 0.0)
        gain = self.carried * np.sqrt(left / np.maximum(np.abs(joints[0]) ** 2 + np.abs(joints[1]) ** 2, 1e-20))
        out = []
        for mode, joint, arm in zip((mode_x, mode_y), joints, (self.arm_x, self.arm_y)):
            base = mode.ravel()[self.where]
            carry = (gain * joint)[self.owner]
            rigid = carry + theta[self.owner] * arm + FLUTTER * (base - carry)
            moved = mode.copy()
            moved.ravel()[self.where] = self.fade * rigid
            out.append(moved)
        return out[0], out[1]


def regions_for(still: Still, preset: Preset, width: int, height: int,
                mask: np.ndarray | None = None) -> MotionRegions:
    """What moves at the motion resolution: the user mask if given, else the analysis.

    mask: float [H, W] of the still in 0..1 (white moves); `mask > 0` may move
          (area-averaged to the motion resolution like the pin, `pinning.motion_mask`).
    """
    alpha = None
    if still.alpha is not None:
        alpha = cv2.resize(still.alpha, (width, height), interpolation=cv2.INTER_AREA)
    if mask is None:
        rgb = cv2.resize(still.rgb, (width, height), interpolation=cv2.INTER_AREA)
        return analyze(rgb, preset.what_moves, alpha)
    mask = np.asarray(mask, np.float32)
    if mask.shape != (still.height, still.width):
        raise UserError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                        f"{still.width}x{still.height}; read it with io.read_mask to resample it")
    free = motion_mask((mask > 0).astype(np.float32), width, height)
    if alpha is not None:
        free = free * np.clip(alpha, 0.0, 1.0)
    return MotionRegions(free, connected_objects(free, threshold=0.0))


def sample_volume(still: Still, preset: Preset, seed: int = 0, mask: np.ndarray | None = None,
                  num_bands: int = spectral.DEFAULT_BANDS, fps: float = 30.0,
                  period_frames: int = 150, motion_size: int = MOTION_SIZE_PX,
                  progress: Progress | None = None) -> spectral.SpectralVolume:
    """A procedural spectral volume for `still`, source "procedural".

    still:   the decoded photo (any size >= 1x1; alpha = 0 never moves).
    preset:  physical parameters (gdyn_backend.presets.load_preset).
    seed:    random seed; the same inputs and seed give identical volumes.
    mask:    optional float [H, W] in 0..1 at the still's size, used as the cue
             for what moves (`mask > 0`): the volume is exactly 0 at motion
             pixels whose footprint is all black. Pinning (grey scales, black
             is exactly still) is the pipeline's (`gdyn_backend.pinning`).
    num_bands, fps, period_frames: K bands at f_k = k * fps / T Hz.
    motion_size: long side of the motion resolution in pixels.
    Returns amplitudes float32 [K, 4, h, w] in pixels of the motion resolution.
    """
    if not fps > 0 or period_frames < 2 or not 1 <= num_bands <= period_frames // 2 + 1:
        raise UserError(f"need fps > 0, period_frames >= 2 and 1 <= bands <= period_frames // 2 + 1; "
                        f"got fps={fps}, period_frames={period_frames}, bands={num_bands}")
    width, height = motion_resolution(still.width, still.height, motion_size)
    progress = progress or Progress()
    progress.start("motion prior", num_bands + 1)
    regions = regions_for(still, preset, width, height, mask)
    progress.advance()

    rng = np.random.default_rng(seed)
    freqs = spectral.band_frequencies(num_bands, fps, period_frames)
    envelope = spectral_envelope(freqs, preset)
    long_side = max(width, height)
    target_rms = preset.amplitude_px * long_side / REFERENCE_SIZE_PX
    # RMS over time of sum_k Re(A_k e^{i w t}) is sqrt(sum_k |A_k|^2 / 2) for unit-RMS fields.
    norm = np.sqrt(np.sum(envelope ** 2) / 2.0)
    band_scale = envelope * (target_rms / norm if norm > 0 else 0.0)

    objects = regions.objects
    phase, gain, angle = _object_table(rng, regions.num_objects, num_bands, preset)
    feather = max(0.7, long_side / 128.0)

    def per_object(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values[objects].astype(np.float32), (0, 0), feather)

    direction = np.stack([per_object(np.cos(angle)), per_object(np.sin(angle))])
    direction /= np.maximum(np.sqrt((direction ** 2).sum(0)), 1e-6)
    areas = np.bincount(objects.ravel(), minlength=regions.num_objects + 1)
    # Small things sway by a fraction of their own size: full amplitude from an
    # extent (sqrt of area) of SMALL_OBJECT_EXTENT of the long side, linear below.
    size_gain = np.minimum(1.0, np.sqrt(areas) / (SMALL_OBJECT_EXTENT * long_side))
    size_gain[0] = 1.0
    weight = regions.moveability * anchor_profile(objects, preset.stiffness, rooted=preset.what_moves == "flame") * per_object(gain * size_gain)
    rigid_table = np.where(areas < LARGE_OBJECT_FRACTION * objects.size, RIGIDITY, 0.0)
    rigid_table[0] = 0.0
    rigid = per_object(rigid_table)
    flexible = np.sqrt(np.clip(1.0 - rigid * rigid, 0.0, 1.0))
    bias = preset.direction_bias
    f0 = float(np.sqrt(preset.band_hz[0] * preset.band_hz[1]))
    isotropic = np.sqrt(max(0.0, 1.0 - bias * bias))
    # Along the wind one unit field, across both axes one each: divide by the
    # RMS of their sum so that a free pixel's RMS is exactly band_scale * weight.
    spread = float(np.sqrt(bias * bias + 2.0 * isotropic * isotropic))
    # Drawn apart from the base fields, so that these stay as they were.
    pieces = RigidPieces(regions, weight, feather, band_scale, np.random.default_rng([int(seed), 1]))

    amplitude = np.zeros((num_bands, 4, height, width), np.float32)
    for k in range(num_bands):
        if band_scale[k] == 0:
            progress.advance()
            continue
        # Low bands are smoother in space than high ones (longer modes vibrate slower).
        length = preset.coherence * long_side * np.sqrt(f0 / max(freqs[k], f0))
        along, free_x, free_y = (_smooth_noise(rng, width, height, length) for _ in range(3))
        # Small objects mostly move as a whole: one shared complex value per object.
        shared = (rng.standard_normal((3, regions.num_objects + 1))
                  + 1j * rng.standard_normal((3, regions.num_objects + 1))) / np.sqrt(2.0)
        along, free_x, free_y = (
            flexible * field + rigid * (per_object(value.real) + 1j * per_object(value.imag))
            for field, value in zip((along, free_x, free_y), shared))
        rotate = per_object(np.cos(phase[:, k])) + 1j * per_object(np.sin(phase[:, k]))
        common = band_scale[k] / spread * weight * rotate
        mode_x = common * (bias * direction[0] * along + isotropic * free_x)
        mode_y = common * (bias * direction[1] * along + isotropic * free_y)
        mode_x, mode_y = pieces.apply(mode_x, mode_y, k, band_scale[k])
        amplitude[k] = np.stack([mode_x.real, mode_x.imag, mode_y.real, mode_y.imag])
        progress.advance()
    metadata = {"preset": preset.name, "seed": str(int(seed))}
    return spectral.SpectralVolume(amplitude, freqs, float(fps), int(period_frames), "procedural", metadata)

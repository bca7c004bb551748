"""Interactive dynamics: a spectral volume read as an image-space modal basis.

Paper §6.3 after Davis et al. (2015, 2016). Every band k of a
`spectral.SpectralVolume` with f_k > 0 is a mode with

    shape      A_k(p) in C^2     complex [2, H, W] (x, y), pixels of the motion resolution
    frequency  w_k = 2 pi max(f_k, f_floor)   rad/s (f_k = `volume.frequencies_hz[k]`, Hz)
    damping    zeta_k = min(1, xi max(w_k, w_ref) / w_k)   dimensionless ratio
    mass       1

and a complex modal coordinate q_k(t) (dimensionless) obeying

    q_k'' + 2 zeta_k w_k q_k' + w_k^2 q_k = f_k(t)                   (1/s^2)

The image-space response, a forward displacement like a motion texture, is

    u_t(p) = Re( sum_k A_k(p) q_k(t) )                              [2, H, W] pixels

Responding like an object. The lowest bands of a spectral volume are not
an object's resonances: in a 150-frame window at 25 fps band 1 is 0.17 Hz,
the slow drift of the wind, and it carries the largest share of a real
clip's motion. Read literally, a poke would peak a quarter period later
(1.5 s) and a 5 % damped 0.17 Hz mode would ring for 20 s. Two rules make
every volume answer a poke within a fraction of a second and ring down
within a few seconds:

* Mode floor: no mode is softer than f_floor = `MODE_FLOOR_HZ` (0.5 Hz),
  the slowest oscillator whose quarter period (the rise time of a poke)
  is at most 0.5 s. A slower band keeps its shape and is stiffened to
  f_floor; bands above it keep their frequency.
* Frequency-dependent damping: `damping` xi is the ratio at and above
  f_ref = `DAMPING_REFERENCE_HZ` (3 Hz); below it every mode decays at the
  rate of a mode at f_ref, sigma_min = xi w_ref (mass-proportional, Rayleigh
  damping: air drag slows a leaf by its velocity whatever its stiffness),
  capped at critical damping (zeta_k <= 1: more would slow the return to
  rest). At the default xi = 0.05, sigma_min = 0.94 / s: every mode's
  amplitude falls to 5 % within 3.2 s, and a poke on a mode at the floor
  peaks after 0.42 s. xi = 0 is no damping at all.

Both act in the dynamics only; the volume (and `gdyn animate`) keep the
band frequencies.

Forces. A force F (a real 2-vector) at pixel p does virtual work
F . Re(A_k(p) dq_k), so its complex modal force is f_k = A_k(p)^H F
(conjugate of the mode shape, as in Davis' interactive dynamic video).
Mode shapes are averaged over a Gaussian footprint around p (sigma
`footprint_px`) for this projection so one noisy pixel does not dominate.

Band 0 (0 Hz, the mean displacement over the source window) is not an
oscillator: under a force it would be a free mass that drifts away forever.
It is left out of the dynamics; the simulated scene rests at the input still
(u = 0), which is also what the anchored motion textures of `animate` do.

Units of a poke. A poke of strength d (pixels, a 2-vector) is an impulse
(momentum) spread evenly over its duration. It is scaled by one constant of
the volume, the largest footprint mobility

    M_ref = max_p sum_k |A^_k(p)|^2 g_k             (px^2 s)

with g_k (s) the peak of mode k's free response to a unit velocity
(`impulse_peaks`: exp(-sigma_k t_k) / w_k at t_k = atan(w_dk / sigma_k) / w_dk,
w_dk the damped frequency), so that each mode receives the modal velocity
v_k = A^_k(p)^H d / M_ref (A^ = shapes averaged over the footprint). Then the
footprint-averaged displacement along d at the poked point never exceeds
|d|, and it reaches |d| at the most mobile point of the image when one mode
dominates there (less when several modes peak at different times); stiffer
points (smaller, higher-frequency shapes) move less, and pinned or static
points (shapes 0) not at all. A single noisy pixel may move more or less than
its neighbourhood average.

Drag. Holding pixel p at offset d puts the modes in the state of least
elastic energy sum_k w_k^2 |q_k|^2 that moves p by d, regularized:

    min_q |Re(sum_k A_k(p) q_k) - d|^2 + mu sum_k w_k^2 |q_k|^2,  mu = lambda * C_ref

with C_ref = max_p sum_k |A^_k(p)|^2 / w_k^2 (px^2 s^2, the largest static
compliance) and lambda = `regularization` (1e-3). The solution is the static
response to a point force at p, and mu acts like the compliance of the
user's hand: along a direction in which p is compliant (C, its compliance
in that direction) the point reaches the fraction C / (C + mu) of the
offset, so points at least a few percent as compliant as the most compliant
one reach it to well under a pixel, stiff directions follow only partly,
and a point the basis cannot move (pinned, or a direction no mode has)
stays put. Modal velocities are 0 while held; on release the modes ring
down freely from that state.

Integrators. Each step advances one frame, dt = 1 / fps, with the force held
constant over the step. "exact" (default) uses the exact discretization of
each damped oscillator for piecewise-constant force (the matrix exponential
of the 2x2 system), so the discrete state is the continuous solution sampled
at the frames: with no input the energy sum 1/2 |q'|^2 + 1/2 w^2 |q|^2 never
grows, at any fps, frequency and damping ratio. "euler" is forward Euler as
in the paper; its per-step energy gain factor is 1 - 2 zeta w dt + (w dt)^2,
which is above 1 whenever w dt > 2 zeta (e.g. a 3 Hz mode at 30 fps with
zeta = 0.05).

This module is the physics only, in motion pixels, and imports nothing of
gdyn but `spectral` and `errors`. Pokes and drags in still pixels and the
OUTDIR pipeline are `gdyn_backend.simulate`; the frame-by-frame preview is
`gdyn_backend.live`; pin masks are applied to the volume before it gets here
(`gdyn_backend.pinning`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gdyn_backend import spectral
from gdyn_backend.errors import UserError

DEFAULT_DAMPING = 0.05
MODE_FLOOR_HZ = 0.5  # no mode is softer: a poke's rise (a quarter period) takes at most 0.5 s
DAMPING_REFERENCE_HZ = 3.0  # `damping` is the ratio from here up; slower modes decay at this one's rate
DEFAULT_FOOTPRINT_PX = 2.0
DEFAULT_REGULARIZATION = 1e-3
INTEGRATORS = ("exact", "euler")


# ---------------------------------------------------------------------------
# The modal basis


@dataclass(frozen=True)
class ModalBasis:
    """The oscillating modes of one spectral volume at its motion resolution.

    shapes:        complex64 [M, 2, H, W], A_k (x, y) in pixels (a pinned volume's
                   are 0 where it is pinned, `gdyn_backend.pinning`).
    footprint:     complex64 [M, 2, H, W], shapes averaged over a Gaussian of
                   sigma `footprint_px` pixels (used to project forces).
    omega:         float64 [M], natural angular frequencies w_k = 2 pi max(f_k, MODE_FLOOR_HZ), rad/s.
    bands:         int64 [M], index of each mode's band in the volume.
    footprint_px:  Gaussian sigma of the force footprint, motion pixels.
    """

    shapes: np.ndarray
    footprint: np.ndarray
    omega: np.ndarray
    bands: np.ndarray
    footprint_px: float
    _stacked: np.ndarray = field(repr=False)  # float32 [2M, 2*H*W]: Re A_k, Im A_k rows

    @property
    def num_modes(self) -> int:
        return self.shapes.shape[0]

    @property
    def height(self) -> int:
        return self.shapes.shape[2]

    @property
    def width(self) -> int:
        return self.shapes.shape[3]

    def displacement(self, q: np.ndarray) -> np.ndarray:
        """u = Re(sum_k A_k q_k) for complex coordinates q [M], float32 [2, H, W] pixels."""
        weights = np.empty(2 * self.num_modes, np.float32)
        weights[0::2] = q.real
        weights[1::2] = -q.imag  # Re(A q) = Re A Re q - Im A Im q
        # einsum's own loop, not BLAS: measured 0.5 ms at 256x144 x 15 modes between renderer
        # calls, where a BLAS matrix-vector product waiting on its sleeping threads took 3-10 ms.
        return np.einsum("k,kn->n", weights, self._stacked).reshape(2, self.height, self.width)

    def shape_at(self, x: float, y: float, smoothed: bool) -> np.ndarray:
        """Mode shapes at a (fractional) pixel, bilinear, complex128 [M, 2]."""
        field_ = self.footprint if smoothed else self.shapes
        h, w = self.height, self.width
        x = min(max(float(x), 0.0), w - 1.0)
        y = min(max(float(y), 0.0), h - 1.0)
        x0, y0 = min(int(x), w - 2) if w > 1 else 0, min(int(y), h - 2) if h > 1 else 0
        fx, fy = x - x0, y - y0
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        out = ((1 - fx) * (1 - fy) * field_[:, :, y0, x0] + fx * (1 - fy) * field_[:, :, y0, x1]
               + (1 - fx) * fy * field_[:, :, y1, x0] + fx * fy * field_[:, :, y1, x1])
        return out.astype(np.complex128)


def modal_basis(volume: spectral.SpectralVolume, footprint_px: float = DEFAULT_FOOTPRINT_PX) -> ModalBasis:
    """The volume's bands with f_k > 0 as modes (band 0 / 0 Hz is a static offset, left out),
    bands below the mode floor stiffened to it (module docstring).

    A pixel where every band of the volume is 0 (pinned) has shapes exactly 0,
    so it never moves and a poke there excites nothing.
    """
    import cv2

    bands = np.flatnonzero(volume.frequencies_hz > 0)
    shapes = np.ascontiguousarray(volume.complex_modes()[bands], np.complex64)
    footprint = np.empty_like(shapes)
    for m in range(shapes.shape[0]):
        for axis in range(2):
            re = cv2.GaussianBlur(np.ascontiguousarray(shapes[m, axis].real), (0, 0), footprint_px,
                                  borderType=cv2.BORDER_REPLICATE)
            im = cv2.GaussianBlur(np.ascontiguousarray(shapes[m, axis].imag), (0, 0), footprint_px,
                                  borderType=cv2.BORDER_REPLICATE)
            footprint[m, axis] = re + 1j * im
    m, _, h, w = shapes.shape
    stacked = np.empty((2 * m, 2 * h * w), np.float32)
    stacked[0::2] = shapes.real.reshape(m, -1)
    stacked[1::2] = shapes.imag.reshape(m, -1)
    omega = 2 * np.pi * np.maximum(volume.frequencies_hz[bands], MODE_FLOOR_HZ)
    return ModalBasis(shapes, footprint, omega, bands, float(footprint_px), stacked)


# ---------------------------------------------------------------------------
# Damping and response of single modes


def mode_damping(omega: np.ndarray, damping: float) -> np.ndarray:
    """Damping ratios zeta_k float64 [M] of modes at omega [M] (rad/s) for the ratio xi = `damping`.

    zeta_k = min(1, xi max(w_k, w_ref) / w_k), w_ref = 2 pi DAMPING_REFERENCE_HZ:
    xi at and above f_ref, the decay rate xi w_ref below it, never overdamped.
    """
    omega = np.asarray(omega, np.float64)
    w_ref = 2.0 * np.pi * DAMPING_REFERENCE_HZ
    return np.minimum(1.0, damping * np.maximum(omega, w_ref) / omega)


def impulse_peaks(omega: np.ndarray, zeta: np.ndarray) -> np.ndarray:
    """g_k float64 [M] (s): the largest displacement of a free mode kicked to unit velocity.

    The response q(t) = exp(-sigma t) sin(w_d t) / w_d (sigma = zeta w,
    w_d = w sqrt(1 - zeta^2)) peaks first, at t = atan(w_d / sigma) / w_d, at
    exp(-sigma t) / w; critically damped (zeta = 1) at t = 1 / w.
    """
    omega = np.asarray(omega, np.float64)
    sigma = zeta * omega
    damped = omega * np.sqrt(np.clip(1.0 - zeta ** 2, 0.0, 1.0))
    ringing = damped > 1e-9 * omega
    t_peak = np.where(ringing, np.arctan2(damped, sigma) / np.where(ringing, damped, 1.0),
                      1.0 / np.maximum(sigma, 1e-300))
    return np.exp(-sigma * t_peak) / omega


# ---------------------------------------------------------------------------
# Integrators: one linear map per mode, [q, q']_{n+1} = Phi [q, q']_n + Gamma f_n


def step_matrices(omega: np.ndarray, zeta: np.ndarray, dt: float, integrator: str = "exact",
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Transition Phi float64 [M, 2, 2] and force input Gamma float64 [M, 2] for one step.

    omega: [M] rad/s; zeta: damping ratios [M] (or one for all), >= 0; dt:
    step in seconds. The force f_n (1/s^2) is held constant over the step.
    "exact" is the matrix exponential of [[0, 1], [-w^2, -2 zeta w]]
    (augmented with the force), for any zeta (under-, critically or
    over-damped); "euler" is forward Euler.
    """
    omega = np.asarray(omega, np.float64)
    zeta = np.broadcast_to(np.asarray(zeta, np.float64), omega.shape)
    if integrator == "euler":
        phi = np.empty((omega.size, 2, 2))
        phi[:, 0, 0], phi[:, 0, 1] = 1.0, dt
        phi[:, 1, 0], phi[:, 1, 1] = -omega ** 2 * dt, 1.0 - 2.0 * zeta * omega * dt
        gamma = np.zeros((omega.size, 2))
        gamma[:, 1] = dt
        return phi, gamma
    if integrator != "exact":
        raise UserError(f"unknown integrator {integrator!r}; choose one of {', '.join(INTEGRATORS)}")
    from scipy.linalg import expm

    phi = np.empty((omega.size, 2, 2))
    gamma = np.empty((omega.size, 2))
    for i, (w, z) in enumerate(zip(omega, zeta)):
        system = np.array([[0.0, 1.0, 0.0], [-w * w, -2.0 * z * w, 1.0], [0.0, 0.0, 0.0]])
        e = expm(system * dt)
        phi[i], gamma[i] = e[:2, :2], e[:2, 2]
    return phi, gamma


def modal_energy(q: np.ndarray, v: np.ndarray, omega: np.ndarray) -> float:
    """sum_k 1/2 |q'_k|^2 + 1/2 w_k^2 |q_k|^2 (unit masses), in 1/s^2."""
    return float(0.5 * np.sum(np.abs(v) ** 2 + (omega * np.abs(q)) ** 2))


# ---------------------------------------------------------------------------
# The simulator


@dataclass(frozen=True)
class Poke:
    """A push at a pixel: an impulse of strength (dx, dy) spread over `duration` frames.

    frame:    first frame whose step feels the force (its effect shows from frame + 1).
    x, y:     the poked pixel, motion-resolution pixels (x right, y down).
    dx, dy:   strength in motion pixels (about the peak displacement at the most mobile point).
    duration: frames the impulse is spread over (>= 1).
    """

    frame: int
    x: float
    y: float
    dx: float
    dy: float
    duration: int = 1


@dataclass(frozen=True)
class Drag:
    """Hold pixel (x, y) at offset (dx, dy) from frame `start` to `end` (inclusive), then let go.

    Coordinates and offset in motion pixels. The offset eases in (smoothstep)
    from 0 at frame `start` (the grab) to the full offset `ease_frames` later
    (by `end` at the latest), so the point is pulled rather than teleported;
    frames start..end show the held state, the free ring-down starts at end + 1.
    """

    start: int
    end: int
    x: float
    y: float
    dx: float
    dy: float
    ease_frames: int = 0

    def offset_at(self, frame: int) -> tuple[float, float]:
        ease = min(self.ease_frames, self.end - self.start)
        s = 1.0 if ease <= 0 else min(max(frame - self.start, 0) / ease, 1.0)
        s = s * s * (3 - 2 * s)
        return self.dx * s, self.dy * s


class ModalSimulator:
    """Frame-by-frame modal dynamics of a still (the live preview drives this).

    volume:     the spectral volume (any source, pinned already if a mask applies);
                its bands with f > 0 are the modes.
    damping:    damping ratio xi, 0 <= xi < 1 (0.05 default), of the modes at and above
                DAMPING_REFERENCE_HZ; slower modes decay at that mode's rate (`zeta`).
    fps:        frames per second of the simulation (default: the volume's fps).
    integrator: "exact" (default, never gains energy) or "euler" (the paper's).

    zeta:       float64 [M], each mode's damping ratio (`mode_damping`).
    mobility:   float64 [H, W] (px^2 s), sum_k |A^_k(p)|^2 g_k: how far a poke at p moves
                p; `mobility_ref` is its maximum (the most mobile point).

    State: complex modal coordinates `q` [M] and velocities `v` [M] (1/s).
    `step()` advances one frame and returns the displacement [2, H, W] in
    motion pixels; `frame` counts the steps taken.
    """

    def __init__(self, volume: spectral.SpectralVolume, damping: float = DEFAULT_DAMPING,
                 fps: float | None = None, integrator: str = "exact",
                 footprint_px: float = DEFAULT_FOOTPRINT_PX,
                 regularization: float = DEFAULT_REGULARIZATION, basis: ModalBasis | None = None):
        if not (np.isfinite(damping) and 0 <= damping < 1):
            raise UserError(f"damping must be a ratio in [0, 1) (e.g. 0.05), got {damping}")
        fps = float(volume.fps if fps is None else fps)
        if not (np.isfinite(fps) and fps > 0):
            raise UserError(f"fps must be positive, got {fps}")
        self.volume, self.damping, self.fps, self.integrator = volume, float(damping), fps, integrator
        self.dt = 1.0 / fps
        self.basis = basis if basis is not None else modal_basis(volume, footprint_px)
        self.regularization = float(regularization)
        self.zeta = mode_damping(self.basis.omega, self.damping)
        self._phi, self._gamma = step_matrices(self.basis.omega, self.zeta, self.dt, integrator)
        smooth_power = (np.abs(self.basis.footprint) ** 2).sum(axis=1)  # [M, H, W]
        self.mobility = np.tensordot(impulse_peaks(self.basis.omega, self.zeta), smooth_power, 1)
        self.mobility_ref = float(self.mobility.max()) if smooth_power.size else 0.0
        self.compliance_ref = (float(np.tensordot(1.0 / self.basis.omega ** 2, smooth_power, 1).max())
                               if smooth_power.size else 0.0)
        self.reset()

    # -- state -------------------------------------------------------------

    def reset(self) -> None:
        """Back to rest at the still: q = q' = 0, no forces, nothing held, frame 0."""
        m = self.basis.num_modes
        self.q = np.zeros(m, np.complex128)
        self.v = np.zeros(m, np.complex128)
        self.frame = 0
        self._forces: list[tuple[np.ndarray, int]] = []  # (modal force [M], steps left)
        self._held: np.ndarray | None = None

    @property
    def state(self) -> dict:
        """A copy of the state: {'q', 'v', 'frame', 'held', 'forces'}; give it back to `set_state`."""
        return {"q": self.q.copy(), "v": self.v.copy(), "frame": self.frame,
                "held": None if self._held is None else self._held.copy(),
                "forces": [(f.copy(), n) for f, n in self._forces]}

    def set_state(self, state: dict) -> None:
        self.q, self.v = state["q"].copy(), state["v"].copy()
        self.frame = int(state["frame"])
        self._held = None if state["held"] is None else state["held"].copy()
        self._forces = [(f.copy(), n) for f, n in state["forces"]]

    def energy(self) -> float:
        """Modal energy sum 1/2 |q'|^2 + 1/2 w^2 |q|^2 (1/s^2); never grows unforced with "exact"."""
        return modal_energy(self.q, self.v, self.basis.omega)

    def displacement(self) -> np.ndarray:
        """Current response Re(sum_k A_k q_k), float32 [2, H, W], motion pixels."""
        return self.basis.displacement(self.q)

    # -- input -------------------------------------------------------------

    def modal_impulse(self, x: float, y: float, dx: float, dy: float) -> np.ndarray:
        """Modal velocity change v_k = A^_k(p)^H d / M_ref of a poke, complex128 [M] (1/s)."""
        if self.mobility_ref <= 0:
            return np.zeros(self.basis.num_modes, np.complex128)
        shape = self.basis.shape_at(x, y, smoothed=True)  # [M, 2]
        return (np.conj(shape) @ np.array([dx, dy], np.float64)) / self.mobility_ref

    def apply_poke(self, x: float, y: float, dx: float, dy: float, duration: int = 1) -> None:
        """Push pixel (x, y) (motion pixels) with strength (dx, dy) pixels over the next `duration` steps."""
        duration = int(duration)
        if duration < 1:
            raise UserError(f"a poke lasts at least 1 frame, got {duration}")
        impulse = self.modal_impulse(x, y, dx, dy)
        self._forces.append((impulse / (duration * self.dt), duration))

    def drag_state(self, x: float, y: float, dx: float, dy: float) -> np.ndarray:
        """Coordinates q [M] (complex128) of least elastic energy that move (x, y) by (dx, dy).

        Regularized least squares over the modes (see the module docstring);
        with weights W = diag(w^2) the 2M x 2M normal equations reduce to a
        2 x 2 solve: x = W^-1 B^T (B W^-1 B^T + mu I)^-1 d.
        """
        m = self.basis.num_modes
        if m == 0 or self.compliance_ref <= 0:
            return np.zeros(m, np.complex128)
        a = self.basis.shape_at(x, y, smoothed=False)  # [M, 2]
        b = np.concatenate([a.real.T, -a.imag.T], axis=1)  # [2, 2M] acting on (Re q, Im q)
        w_inv = np.tile(1.0 / self.basis.omega ** 2, 2)  # [2M]
        mu = self.regularization * self.compliance_ref
        gram = (b * w_inv) @ b.T + mu * np.eye(2)
        sol = w_inv * (b.T @ np.linalg.solve(gram, np.array([dx, dy], np.float64)))
        return sol[:m] + 1j * sol[m:]

    def hold(self, x: float, y: float, dx: float, dy: float) -> None:
        """Hold pixel (x, y) at offset (dx, dy) (motion pixels) until `release()`.

        The state jumps to the held equilibrium now (velocities 0) and stays
        there at every `step()`; call again with a new offset to drag.
        """
        self._held = self.drag_state(x, y, dx, dy)
        self.q, self.v = self._held.copy(), np.zeros_like(self.v)

    def release(self) -> None:
        """Let go: from the next step the modes ring down freely from the held state."""
        self._held = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    # -- time --------------------------------------------------------------

    def advance(self) -> None:
        """One step of dt = 1 / fps: integrate (or stay held); pending pokes count down."""
        force = np.zeros_like(self.q)
        remaining = []
        for f, n in self._forces:
            force += f
            if n > 1:
                remaining.append((f, n - 1))
        self._forces = remaining
        if self._held is not None:
            self.q, self.v = self._held.copy(), np.zeros_like(self.v)  # the hand absorbs the force
        else:
            phi, gamma = self._phi, self._gamma
            q = phi[:, 0, 0] * self.q + phi[:, 0, 1] * self.v + gamma[:, 0] * force
            v = phi[:, 1, 0] * self.q + phi[:, 1, 1] * self.v + gamma[:, 1] * force
            self.q, self.v = q, v
        self.frame += 1

    def step(self) -> np.ndarray:
        """Advance one frame and return the displacement float32 [2, H, W] (motion pixels)."""
        self.advance()
        return self.displacement()

    def unstable_modes(self) -> int:
        """How many modes gain energy per unforced step (spectral radius of Phi > 1)."""
        return int(sum(np.abs(np.linalg.eigvals(p)).max() > 1 + 1e-12 for p in self._phi))


def simulate(simulator: ModalSimulator, num_frames: int, pokes=(), drags=()):
    """Displacements of frames 0..N-1, each float32 [2, H, W] in motion pixels (a generator).

    Frame 0 is the still at rest. A poke at frame F acts on the step from F to
    F + 1 (and the next duration - 1 steps); a drag holds frames start..end.
    Pokes and drags superpose their schedules; while a point is held the held
    state wins (pokes during a hold are absorbed). Starts from `reset()`.
    """
    simulator.reset()
    for frame in range(num_frames):
        held = [d for d in drags if d.start <= frame <= d.end]
        if held:
            simulator.hold(held[-1].x, held[-1].y, *held[-1].offset_at(frame))
        yield simulator.displacement()
        for p in pokes:
            if p.frame == frame:
                simulator.apply_poke(p.x, p.y, p.dx, p.dy, p.duration)
        if simulator.holding and not any(d.start <= frame + 1 <= d.end for d in drags):
            simulator.release()
        simulator.advance()

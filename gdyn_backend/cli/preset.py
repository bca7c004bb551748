"""`gdyn preset --from-video CLIP -o my_wind.toml`: a preset fitted to a reference clip."""

from __future__ import annotations

from pathlib import Path

from gdyn_backend.errors import UserError
from gdyn_backend.flow import DEFAULT_WINDOW, extract_volume
from gdyn_backend.io import atomic_path
from gdyn_backend.preset_fit import fit_preset, measure_volume
from gdyn_backend.presets import DEFAULT_PRESET, load_preset, preset_toml
from gdyn_backend.progress import Progress, terminal_bar


def run(args) -> int:
    output = Path(args.output)
    if output.suffix != ".toml":
        raise UserError(f"output must end in .toml, got {output.name}")
    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name ending in .toml")
    base = load_preset(args.base)
    volume, _ = extract_volume(args.from_video, start=args.start, window=args.frames, fps=args.fps,
                            force=args.force, progress=Progress(terminal_bar()))
    motion = measure_volume(volume)
    name = output.stem
    label = args.label or name.replace("_", " ").capitalize()
    clip = Path(args.from_video).name
    preset = fit_preset(motion, base, name, label, args.description or f"Motion fitted to {clip}.")
    comment = (f"Fitted by `gdyn preset --from-video {clip}` (frames {args.start}-{args.start + args.frames - 1} "
               f"at {volume.fps:g} fps); what_moves, stiffness and variation from {base.name}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp.write_text(preset_toml(preset, comment), encoding="utf-8")
    print(f"wrote {output}: {preset.amplitude_px:.2f} px RMS at 512 px, spectrum "
          f"{preset.spectrum_hz[0]:.2f}-{preset.spectrum_hz[-1]:.2f} Hz (fitted band {preset.band_hz[0]:.2f}-"
          f"{preset.band_hz[1]:.2f} Hz), direction {preset.direction_deg:.0f} deg (bias {preset.direction_bias:.2f}), "
          f"coherence {preset.coherence:.2f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("preset", help="fit a motion preset (.toml) to a reference clip",
                       description="Extract the clip's motion like `gdyn extract`, then fit a preset to it: "
                                   "its spectrum (per-band energies), amplitude, dominant direction and "
                                   "spatial coherence. Use the file with --preset.")
    p.add_argument("--from-video", required=True, metavar="CLIP",
                   help="reference clip (mp4, avi, mov, ...) or a folder of frames, from a still camera")
    p.add_argument("-o", "--output", required=True, help="preset file to write (.toml)")
    p.add_argument("--start", type=int, default=0, help="first frame of the window (default 0)")
    p.add_argument("--frames", type=int, default=DEFAULT_WINDOW,
                   help=f"window length in frames (default {DEFAULT_WINDOW}); keep it before anything walks in")
    p.add_argument("--fps", type=float, help="frame rate of the clip (default: the file's; 30 for image folders)")
    p.add_argument("--base", default=DEFAULT_PRESET,
                   help=f"preset giving what moves, stiffness and variation (default {DEFAULT_PRESET})")
    p.add_argument("--label", help="name shown in menus (default: from the file name)")
    p.add_argument("--description", help="one sentence for tooltips")
    p.add_argument("--force", action="store_true",
                   help="fit a clip the motion filters reject (mean motion > 8 px, camera motion)")
    p.set_defaults(func=run)

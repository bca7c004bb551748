"""`gdyn sample IMAGE --checkpoint F -o MOTION.safetensors`: a spectral volume from the model."""

from __future__ import annotations

from gdyn_backend.cli.arguments import add_motion_output, add_seed, add_still_input, save_motion
from gdyn_backend.progress import Progress, terminal_bar


def run(args) -> int:
    from gdyn_backend import spectral
    from gdyn_backend.io import read_image
    from gdyn_backend.sources.model import sample_volume

    output = spectral.motion_output_path(args.output)
    still = read_image(args.image)
    volume = sample_volume(still, args.checkpoint, seed=args.seed, loop=args.loop, steps=args.steps,
                           guidance=args.guidance, loop_guidance=args.loop_guidance,
                           progress=Progress(terminal_bar()), loop_frames=args.loop_frames)
    return save_motion(volume, output, f"{volume.metadata['ddim_steps']} DDIM steps")


def register(sub) -> None:
    p = sub.add_parser("sample", help="still -> spectral volume with the trained motion model",
                       description="DDIM sampling with classifier-free guidance; --loop adds the motion "
                                   "self-guidance of the paper's eq. 5. Needs a model file from "
                                   "`gdyn train ldm` (no weights ship with gdyn).")
    add_still_input(p)
    p.add_argument("--checkpoint", required=True, help="model.safetensors from `gdyn train ldm`")
    add_motion_output(p)
    p.add_argument("--loop", action="store_true", help="guide towards a seamless loop (500 steps by default)")
    p.add_argument("--loop-frames", type=int, help="frames of the loop at the model's fps (default 60)")
    p.add_argument("--steps", type=int, help="DDIM steps (default 250; 500 with --loop)")
    p.add_argument("--guidance", type=float, default=1.75, help="classifier-free guidance w (default 1.75)")
    p.add_argument("--loop-guidance", type=float, default=200.0, help="loop self-guidance u (default 200)")
    add_seed(p, what="noise seed (same seed, same motion)")
    p.set_defaults(func=run)

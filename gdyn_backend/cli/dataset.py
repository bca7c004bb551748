"""`gdyn dataset VIDEOS_DIR -o DATA_DIR`: training pairs (start image, spectral volume)."""

from __future__ import annotations

from gdyn_backend.cli.arguments import add_videos_input, parse_size
from gdyn_backend.errors import UserError
from gdyn_backend.flow import default_bands
from gdyn_backend.progress import Progress, terminal_bar


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8); UserError unless 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard i/n needs 0 <= i < n, got {text}")
    return i, n


def run(args) -> int:
    from gdyn_backend.model.data import DatasetConfig, build_dataset, compute_statistics

    progress = Progress(terminal_bar())
    if args.stats_only:
        normalizer = compute_statistics(args.output, progress)
        print(f"wrote {args.output}/normalization.safetensors: scales {', '.join(f'{s:.3g}' for s in normalizer.scales)} px")
        return 0
    width, height = parse_size(args.size)
    bands = default_bands(args.window) if args.bands is None else args.bands
    cfg = DatasetConfig(width, height, args.stride, args.window, bands, args.fps)
    shard = parse_shard(args.shard)
    report = build_dataset(args.videos, args.output, cfg, shard, progress, args.jobs)
    unreadable = f", {report.unreadable} unreadable (see rejected/)" if report.unreadable else ""
    print(f"{report.accepted} pairs written, {report.rejected} rejected by the motion filters, "
          f"{report.skipped} already done; {report.clips} clips processed in shard {shard[0]}/{shard[1]}"
          f"{unreadable}")
    if shard[1] > 1:
        print(f"when every shard is done, run: gdyn dataset {args.videos} -o {args.output} --stats-only")
    return 0


def register(sub) -> None:
    p = sub.add_parser("dataset", help="videos -> training pairs (image, spectral volume)",
                       description="Every STRIDE-th frame of each clip starts a WINDOW-frame window; flow "
                                   "from the start to each frame gives K bands. Windows failing the filters "
                                   "(mean motion > 8 px, camera motion, something entering the shot, repeated "
                                   "frames too sparse) and unreadable clips go to DATA_DIR/rejected/ with the "
                                   "reason. Resumable.")
    add_videos_input(p)
    p.add_argument("-o", "--output", required=True, help="DATA_DIR to write (resumes if it exists)")
    p.add_argument("--shard", default="0/1", help="process only clip shard i of n, e.g. 3/8 (default 0/1)")
    p.add_argument("--size", default="256x160", help="motion resolution WxH (default 256x160)")
    p.add_argument("--stride", type=int, default=10, help="frames between starts (default 10)")
    p.add_argument("--window", type=int, default=150, help="frames per window, start included (default 150)")
    p.add_argument("--bands", type=int,
                   help="K frequency bands (default 16, or T/2+1 for windows under 30 frames)")
    p.add_argument("--jobs", type=int, default=1,
                   help="clips cut at the same time, each in its own process (default 1); same files as one")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of folders of frames (default 30)")
    p.add_argument("--stats-only", action="store_true",
                   help="only (re)compute normalization.safetensors from the pairs in DATA_DIR")
    p.set_defaults(func=run)

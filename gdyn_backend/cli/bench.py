"""`gdyn bench`: run the performance sections and print one table."""

from __future__ import annotations

from gdyn_backend.bench import SECTIONS, run_sections


def run(args) -> int:
    only = args.only.split(",") if args.only else None
    print(run_sections(only, quick=args.quick, threads=args.threads))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="print the performance table")
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="fewer repeats (for smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads (default 2)")
    p.set_defaults(func=run)

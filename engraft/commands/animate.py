"""``engraft animate RUN_DIR --out FILE``: the lattice over time as a GIF or MP4."""

from __future__ import annotations

from pathlib import Path

HELP = "animate a run's lattice snapshots (GIF, or MP4 with ffmpeg)"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a run directory written by engraft run")
    parser.add_argument("--by", choices=("type", "origin", "clone"), default="type",
                        help="colour sites by cell type, origin (host / graft / transduced) or clone")
    parser.add_argument("--out", required=True, help="output file, .gif or .mp4 (an existing file only with --force)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file at --out")
    parser.add_argument("--fps", type=float, default=2.0, help="frames (snapshots) per second (default 2)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")


def main(args) -> int:
    from engraft.cli import UsageError
    from engraft.outputs import check_new_file
    from engraft.plots.animation import MissingWriterError, animate_run, check_output
    from engraft.results import is_run_dir

    if args.fps <= 0:
        raise UsageError(f"--fps: must be > 0, got {args.fps:g}")
    try:
        check_output(args.out)
    except (ValueError, MissingWriterError) as err:
        raise UsageError(str(err)) from None
    if not is_run_dir(args.run_dir):
        raise UsageError(f"{args.run_dir}: not an engraft run directory")
    check_new_file(args.out, force=args.force, what="animation file")
    out = animate_run(args.run_dir, args.out, by=args.by, fps=args.fps, dpi=args.dpi, force=args.force)
    print(f"animation written to {Path(out)}")
    return 0

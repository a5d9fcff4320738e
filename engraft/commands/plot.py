"""``engraft plot DIR``: publication figures of a run directory or a sweep directory."""

from __future__ import annotations

from pathlib import Path

HELP = "write the figures of a run directory or a sweep directory (PNG and SVG/PDF)"


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="a run directory (engraft run), a sweep directory "
                                          "(with sweep.json / aggregate.parquet) or a cohort directory "
                                          "(engraft cohort)")
    parser.add_argument("--out", help="folder for the figures (default: DIRECTORY/figures)")
    parser.add_argument("--format", default="png,svg", metavar="FORMATS",
                        help="comma-separated file formats: png, svg, pdf (default: png,svg)")


def main(args) -> int:
    from engraft.cli import UsageError
    from engraft.plots.data import PlotInputError, is_sweep_dir
    from engraft.plots.style import parse_formats
    from engraft.results import is_run_dir

    try:
        formats = parse_formats(args.format)
    except ValueError as err:
        raise UsageError(str(err)) from None
    directory = Path(args.directory)
    if not directory.is_dir():
        what = "no such directory" if not directory.exists() else (
            "is not a directory: give a run, sweep or cohort directory")
        raise UsageError(f"{directory}: {what}")
    try:
        from engraft.plots.cohort_figures import is_cohort_dir

        if is_cohort_dir(directory):  # a cohort is a sweep directory with a cohort design
            from engraft.plots.cohort_figures import plot_cohort

            written = plot_cohort(directory, args.out, formats)
        elif is_run_dir(directory):
            from engraft.plots.run_figures import plot_run

            written = plot_run(directory, args.out, formats)
        elif is_sweep_dir(directory):
            from engraft.plots.sweep_figures import plot_sweep

            written = plot_sweep(directory, args.out, formats)
        else:
            raise UsageError(f"{directory}: neither a run directory (summary.json, timeseries.csv, "
                             "snapshots.npz, ...) nor a sweep directory (sweep.json, aggregate.parquet)")
    except (PlotInputError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    folder = written[0].parent if written else Path(args.out or directory / "figures")
    names = sorted({p.stem for p in written})
    print(f"{len(names)} figures ({', '.join(formats)}) written to {folder}: {', '.join(names)}")
    return 0

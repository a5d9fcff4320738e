"""``engraft collect DIR``: rebuild a sweep's aggregate table from its run directories."""

from __future__ import annotations

HELP = "rebuild SWEEP_DIR/aggregate.parquet (one row per run) from sweep.json and the run directories"


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="a sweep directory (with sweep.json)")


def main(args) -> int:
    import pandas as pd

    from engraft.sweep import collect

    target = collect(args.directory)
    status = pd.read_parquet(target, columns=["status"])["status"]
    counts = status.value_counts().to_dict()
    print(f"{target}: {len(status)} runs ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})")
    return 0

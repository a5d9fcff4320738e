"""``engraft collect DIR``: rebuild a sweep's aggregate table from its run directories."""

from __future__ import annotations

HELP = "rebuild SWEEP_DIR/aggregate.parquet from the run directories"


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="a sweep directory (with sweep.json)")


def main(args) -> int:
    import pandas as pd

    from engraft.sweep import collect

    target = collect(args.directory)
    table = pd.read_parquet(target)
    counts = table["status"].value_counts().to_dict()
    print(f"{target}: {len(table)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})")
    return 0

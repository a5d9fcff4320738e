"""``engraft bench``: the kernel benchmarks of ``benchmarks/run.py`` (a source checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HELP = "benchmark the kernels (throughput, Mesa ratio, threads, memory, human scale); needs a checkout"

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


#: the command line after ``bench`` goes to benchmarks/run.py as it is (its own options
#: and ``--help``), so ``engraft bench --quick --out bench.json`` works
RAW_ARGS = True


def add_arguments(parser) -> None:
    parser.add_argument("args", nargs="*", metavar="ARG",
                        help="options of benchmarks/run.py, e.g. --quick --out bench.json (see engraft bench --help)")


def main(args) -> int:
    from engraft.cli import UsageError

    if not SCRIPT.is_file():
        raise UsageError(f"benchmarks are run from a source checkout ({SCRIPT} not found)")
    spec = importlib.util.spec_from_file_location("engraft_benchmarks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return int(module.main(args.args) or 0)

"""Subcommands of the ``engraft`` command line (see engraft.cli)."""


def add_executor_arguments(parser) -> None:
    """``--workers``, ``--scheduler`` and ``--dask-local``: where a batch command's runs go."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: every CPU; 1 runs in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--dask-local", action="store_true", help="start a Dask LocalCluster on 127.0.0.1")


def add_override_arguments(parser, figures_help: str) -> None:
    """``--set``, ``--no-figures`` and ``--quiet`` of a batch command."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the base experiment (repeatable)")
    parser.add_argument("--no-figures", action="store_true", help=figures_help)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

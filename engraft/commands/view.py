"""``engraft view FILE``: an interactive page in the browser (Mesa SolaraViz, served by solara)."""

from __future__ import annotations

HELP = "open an experiment in the browser: the lattice, live plots and sliders (needs engraft[viz])"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment file")
    parser.add_argument("--engine", choices=("auto", "mesa", "kernel"), default="auto",
                        help="mesa (the reference model, agents on a Mesa grid), kernel (compiled, for "
                             "large lattices) or auto: mesa unless its burn-in would be slow (default)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. --set lattice.size=48 (repeatable)")


def main(args) -> int:
    from engraft.cli import UsageError
    from engraft.plots.view import ViewUnavailableError, serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: must be in 0..65535, got {args.port}")
    try:
        return serve(args.config, args.engine, args.host, args.port, args.seed, args.overrides)
    except ViewUnavailableError as err:
        raise UsageError(str(err)) from None

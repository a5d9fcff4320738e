"""Subcommands of the ``engraft`` command line (see engraft.cli)."""

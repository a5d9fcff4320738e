"""Experiment configs: schema, loading and validation."""

from engraft.config.load import (
    ConfigError,
    dump_config,
    estimate_memory_bytes,
    load_config,
    load_yaml,
    validate,
)
from engraft.config.schema import Experiment

__all__ = [
    "ConfigError",
    "Experiment",
    "dump_config",
    "estimate_memory_bytes",
    "load_config",
    "load_yaml",
    "validate",
]

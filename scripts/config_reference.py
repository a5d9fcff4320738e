"""Write docs/config_reference.md: every config key with its type and meaning.

The reference is generated from the schema (engraft/config/schema.py), so it
cannot drift from what `engraft validate` accepts::

    python scripts/config_reference.py            # rewrite docs/config_reference.md
    python scripts/config_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from engraft.config.schema import Experiment

OUT = Path(__file__).resolve().parent.parent / "docs" / "config_reference.md"
MAPPING_KEYS = {"cell_types": "<type>", "mature": "<lineage>"}


def describe(annotation) -> tuple[str, list[str]]:
    """A short type name and the limits carried by an annotation."""
    limits: list[str] = []
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        base, *meta = args
        for m in meta:
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if hasattr(m, attr):
                    limits.append(f"{sign} {getattr(m, attr):g}")
            for inner in getattr(m, "metadata", []):
                for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    if hasattr(inner, attr):
                        limits.append(f"{sign} {getattr(inner, attr):g}")
        name, more = describe(base)
        return name, more + limits
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        name, more = describe(parts[0]) if len(parts) == 1 else (" or ".join(describe(a)[0] for a in parts), [])
        return (name + " or null" if len(parts) < len(args) else name), more
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args), []
    if origin is dict:
        key, value = (describe(a) for a in args)
        return f"mapping {key[0]} -> {value[0]}", value[1]
    if origin is list:
        item = describe(args[0])
        return f"list of {item[0]}", item[1]
    return getattr(annotation, "__name__", str(annotation)), []


def model_in(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def rows(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = model_in(field.annotation)
        origin = typing.get_origin(field.annotation)
        if sub is not None and origin is dict:
            yield path, "mapping", field.description or sub.__doc__.splitlines()[0], ""
            yield from rows(sub, f"{path}.{MAPPING_KEYS.get(name, '<key>')}.")
        elif sub is not None and origin is list:
            yield path, "list", field.description or sub.__doc__.splitlines()[0], ""
            yield from rows(sub, f"{path}[i].")
        elif sub is not None:
            yield from rows(sub, f"{path}.")
        else:
            default = "required" if field.is_required() else repr(field.default)
            kind, limits = describe(field.annotation)
            for m in field.metadata:
                for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    if hasattr(m, attr):
                        limits.append(f"{sign} {getattr(m, attr):g}")
            yield path, kind, field.description or "", default + (f"; {', '.join(limits)}" if limits else "")


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `engraft/config/schema.py` by `python scripts/config_reference.py`.",
        "Rates are per day and times in days unless a name says otherwise. See the",
        "shipped configs in `configs/` for sourced values.",
        "",
        "| key | type | meaning | default; limits |",
        "|---|---|---|---|",
    ]
    for path, kind, doc, default in rows(Experiment):
        lines.append(f"| `{path}` | `{kind}` | {doc} | {default} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        return 0 if OUT.exists() and OUT.read_text() == text else 1
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The one way engraft reads YAML: the safe loader, with limits.

Every config file, base file, sweep file and ``--set`` value goes through
:func:`parse` (text) or :func:`read_yaml_file` (a path). Besides the safe
loader (no Python objects, ever) they refuse, with one line and before any
work is done:

- a file that is not a regular file, or larger than :data:`MAX_FILE_BYTES`
  (an experiment file is a few kB);
- text that is not UTF-8 (UTF-16/32 files, binary data);
- nesting deeper than :data:`MAX_DEPTH` levels (a config needs about six);
- aliases that expand to more than :data:`MAX_VALUES` values (a "billion
  laughs" file of a few hundred bytes would otherwise expand to 10^9);
- a key given twice in one mapping (almost always a mistake: YAML itself
  would silently keep the last one). Keys brought in by a merge key
  (``<<: *defaults``) may be overridden, as YAML intends.

The limits are checked on the parser's event stream, which costs no
recursion and no expansion, so a hostile file is refused in milliseconds
and with bounded memory. libyaml's C parser is used where it is installed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from engraft.errors import UserError, brief, one_line

#: bytes of the largest config file read
MAX_FILE_BYTES = 1 << 20
#: deepest nesting of mappings and lists
MAX_DEPTH = 50
#: values (scalars, mappings, lists) a document may hold once its aliases are expanded
MAX_VALUES = 100_000

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"),
)


class YAMLInputError(UserError, ValueError):
    """A YAML input that engraft refuses to read: one line naming the file (or ``--set``) and why."""


class YAMLSyntaxError(YAMLInputError):
    """The text is not valid YAML (as opposed to YAML beyond engraft's limits)."""


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader (C where available); a subclass so engraft's settings never leak into yaml's."""


def read_text(path: str | os.PathLike, what: str = "config file") -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_FILE_BYTES`, or a one-line error."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise YAMLInputError(f"{path}: no such {what}") from None
    except NotADirectoryError:
        raise YAMLInputError(f"{path}: no such {what} (a part of the path is a file)") from None
    except OSError as err:
        raise YAMLInputError(f"{path}: cannot read: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise YAMLInputError(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise YAMLInputError(f"{path}: not a regular file (a device, pipe or socket); give a {what}")
    if info.st_size > MAX_FILE_BYTES:
        raise YAMLInputError(f"{path}: {info.st_size / 2**20:.1f} MiB is larger than a {what} may be "
                             f"({MAX_FILE_BYTES // 2**20} MiB)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise YAMLInputError(f"{path}: cannot read: {err.strerror}") from None
    if len(data) > MAX_FILE_BYTES:  # grew since stat
        raise YAMLInputError(f"{path}: larger than a {what} may be ({MAX_FILE_BYTES // 2**20} MiB)")
    return decode(data, str(path))


def decode(data: bytes, source: str) -> str:
    """UTF-8 bytes as text (a UTF-8 byte-order mark is dropped); anything else is a one-line error."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise YAMLInputError(f"{source}: is {name} text; engraft reads UTF-8: save the file as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise YAMLInputError(f"{source}: binary data (a NUL byte at offset {nul}), not YAML text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise YAMLInputError(f"{source}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at "
                             f"offset {err.start}); save the file as UTF-8") from None


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(unknown place)"


def _check_events(text: str, source: str) -> None:
    """Depth and expanded size from the event stream: no recursion, no expansion."""
    sizes: dict[str, int] = {}   # anchor -> values under it, aliases expanded
    stack: list[list] = []       # open collections: [values so far, anchor]
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise YAMLInputError(f"{source}: {_where(event.start_mark)}: nested deeper than {MAX_DEPTH} "
                                     "levels (a config needs fewer than ten)")
            stack.append([1, event.anchor])
            continue
        if isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            size = sizes.get(event.anchor, 1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = stack.pop()
            if anchor:
                sizes[anchor] = size
        else:  # stream and document boundaries
            continue
        if stack:
            stack[-1][0] += size
            running = stack[-1][0]
        else:
            total += size
            running = total
        if running > MAX_VALUES:
            raise YAMLInputError(f"{source}: {_where(event.start_mark)}: expands to more than {MAX_VALUES:,} "
                                 "values (aliases repeated inside aliases?); a config holds a few hundred")


def _check_duplicates(node, source: str, path: str = "", seen: set | None = None) -> None:
    """Refuse a key given twice in one mapping (merge-key entries excepted), naming both lines."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                name = key_node.value
                if ident in first:
                    where = f"{path}.{name}" if path else name
                    raise YAMLInputError(
                        f"{source}: line {key_node.start_mark.line + 1}: duplicate key {brief(where)} "
                        f"(first given at line {first[ident].start_mark.line + 1}); give each key once")
                first[ident] = key_node
            else:
                name = "?"
            _check_duplicates(value_node, source, f"{path}.{name}" if path else str(name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, source, f"{path}[{i}]", seen)


def parse(text: str, source: str) -> Any:
    """Parse one YAML document with the safe loader and the limits above.

    Parameters
    ----------
    text : the YAML text.
    source : what to name in errors (a path, or ``--set KEY``).

    Raises
    ------
    YAMLInputError
        One line naming ``source``, the place and the problem.
    """
    if len(text) > MAX_FILE_BYTES:
        raise YAMLInputError(f"{source}: {len(text):,} characters is more than a config may have "
                             f"({MAX_FILE_BYTES:,})")
    try:
        _check_events(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_duplicates(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if "maximum nesting depth" in str(getattr(err, "problem", "")):  # libyaml's own limit, met first
            raise YAMLInputError(f"{source}: {_where(mark)}: nested deeper than {MAX_DEPTH} levels "
                                 "(a config needs fewer than ten)") from None
        where = f" {_where(mark)}:" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise YAMLSyntaxError(f"{source}:{where} YAML syntax error: {one_line(problem, 200)}") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise YAMLInputError(f"{source}: nested too deeply") from None


def read_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """:func:`read_text` then :func:`parse`."""
    return parse(read_text(path, what), str(path))

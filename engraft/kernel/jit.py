"""The one place where engraft's Numba options are set, and where its compiled code is cached.

``cache=True`` keeps compiled code between runs, so only the first run on a
machine pays for compilation. The cache goes in a folder of its own,
``<cache root>/numba-<digest>`` (:func:`ensure_cache_dir`), where the digest
is a hash of the sources of every compiled function (:func:`source_digest`)
and of the Numba version. Any edit to any kernel file, or an upgrade or
reinstall that changes one, therefore starts a fresh folder: Numba's own
cache index notices only edits to the file a function is defined in, not
to the helpers it calls from other files (numba issue 1833), and the kernels
call across files. Nothing is cached next to the sources, so a plain
``pip install .`` leaves nothing behind in ``site-packages`` and a reinstall
needs no clean-up.

The cache root is the folder in ``NUMBA_CACHE_DIR`` if the user set one, else
the per-user cache folder (``~/.cache/engraft`` on Linux, as
``platformdirs``/``appdirs`` name it, honouring ``XDG_CACHE_HOME``). Where
that cannot be written (a locked-down home), a private folder under the
system's temporary directory is used instead, so engraft still runs. Old
digest folders are left alone (they are small; delete the root to reclaim
the space).

``fastmath`` stays off: the kernel is stochastic and its tests compare
against exact expectations. Set ``NUMBA_DISABLE_JIT=1`` to run the same code
as plain Python (slow; used for coverage of compiled bodies).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: the files whose functions are compiled with these options (``engraft.tally`` too)
COMPILED_SOURCES = ("kernel/*.py", "tally.py")


def source_digest(package: Path | None = None) -> str:
    """A hash of the sources of engraft's compiled functions and of the Numba version (16 hex digits).

    ``package``: the ``engraft`` folder to read (default: this one).
    """
    import numba

    package = Path(__file__).resolve().parents[1] if package is None else Path(package)
    h = hashlib.sha256(numba.__version__.encode())
    for pattern in COMPILED_SOURCES:
        for path in sorted(package.glob(pattern)):
            h.update(path.relative_to(package).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _writable(folder: Path) -> bool:
    """True if files can be made in ``folder`` (created if missing), as Numba's cache locators test it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def _private_temp_root() -> Path | None:
    """``<tmp>/engraft-numba-cache-<uid>``, made private to this user; None if it is not ours."""
    uid = os.getuid() if hasattr(os, "getuid") else -1
    root = Path(tempfile.gettempdir()) / f"engraft-numba-cache-{uid}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        owner_ok = uid < 0 or root.stat().st_uid == uid  # never load code another user left there
    except OSError:
        return None
    return root if owner_ok else None


def cache_roots() -> list[Path]:
    """Where the cache may go, in order of preference (see the module docstring)."""
    roots = []
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        roots.append(Path(chosen))
    else:
        from numba.misc.appdirs import AppDirs

        roots.append(Path(AppDirs(appname="engraft", appauthor=False).user_cache_dir))
    temp = _private_temp_root()
    if temp is not None:
        roots.append(temp)
    return roots


def ensure_cache_dir() -> str | None:
    """Point Numba's cache at ``<root>/numba-<digest>`` for the first writable root; return it.

    Must run before the first ``@njit(cache=True)`` function is defined (this
    module is imported first by every compiled module). If no root is
    writable, Numba's default is left in place (the sources' ``__pycache__``).
    """
    import numba

    folder_name = f"numba-{source_digest()}"
    for root in cache_roots():
        folder = root / folder_name
        if _writable(folder):
            numba.config.CACHE_DIR = str(folder)
            return str(folder)
    return None


#: the folder compiled code is cached in (None: Numba's default)
CACHE_DIR = ensure_cache_dir()

JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL_JIT = {**JIT, "parallel": True}

"""The one place where engraft's Numba options are set.

``cache=True`` writes compiled code next to the sources (``__pycache__``), so
only the first run on a machine pays for compilation. Where neither the
sources nor the user's cache directory can be written (a read-only install,
a locked-down home), the cache goes to a private folder under the system's
temporary directory instead (:func:`ensure_cache_dir`), so engraft still
runs. ``fastmath`` stays off: the kernel is stochastic and its tests compare
against exact expectations. Set ``NUMBA_DISABLE_JIT=1`` to run the same code
as plain Python (slow; used for coverage of compiled bodies).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _writable(folder: Path) -> bool:
    """True if files can be made in ``folder`` (created if missing), as Numba's cache locators test it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def ensure_cache_dir() -> None:
    """Give Numba a writable cache folder when neither the sources nor the user's cache are writable.

    Numba fails at import of a ``cache=True`` function with "no locator
    available" in that case. A folder the user set (``NUMBA_CACHE_DIR``) is
    left as it is.
    """
    import numba

    if numba.config.CACHE_DIR:
        return
    if _writable(Path(__file__).resolve().parent / "__pycache__"):
        return
    from numba.misc.appdirs import AppDirs

    if _writable(Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)):
        return
    uid = os.getuid() if hasattr(os, "getuid") else -1
    fallback = Path(tempfile.gettempdir()) / f"engraft-numba-cache-{uid}"
    try:
        fallback.mkdir(mode=0o700, exist_ok=True)
        owner_ok = uid < 0 or fallback.stat().st_uid == uid  # never load code another user left there
    except OSError:
        return
    if owner_ok and _writable(fallback):
        numba.config.CACHE_DIR = str(fallback)


ensure_cache_dir()

JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL_JIT = {**JIT, "parallel": True}

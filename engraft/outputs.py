"""Where engraft writes, and its one rule for it: create, replace only engraft's own, refuse the rest.

Every command that writes (``run``, ``sweep``, ``plot``, ``animate``,
``bench`` and the library functions behind them) asks this module first:

- a path that does not exist is created (with its missing parents);
- an empty directory is used;
- a directory that engraft wrote is replaced (a run directory, recognised
  by its ``provenance.json``) or reopened (a sweep directory, recognised by
  its ``sweep.json``; a figures folder, by its manifest), but a run directory
  is replaced only with ``--force``, and only if it holds nothing but
  engraft's own files;
- anything else (a directory of someone else's files, a regular file where a
  directory goes, an existing file without ``--force``) is refused with one
  line, before any simulation runs, and left exactly as it was.

Problems with the file system itself (a parent that is a file, no write
permission, a read-only or full file system) are found up front, by
creating the output's temporary sibling before any work is done, and are
reported as one line naming the path. Files and directories are created
with the user's umask (readable by colleagues and Dask workers on a shared
file system wherever the umask allows), not private to the user.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from engraft.errors import DiskFull, UserError, brief

#: a run directory holds these files (written by engraft.results.write_run)
RUN_FILES = ("config.yaml", "provenance.json", "timeseries.csv", "clones.csv", "snapshots.npz",
             "summary.json")
#: other names engraft writes into a run directory
RUN_EXTRAS = ("summary.png", "figures")
#: manifest of a figures folder: the files engraft wrote there
FIGURES_MANIFEST = ".engraft-figures.json"

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputError(UserError):
    """An output path that engraft must not or cannot write (one line, exit status 2)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the process's umask, read once (reading it means setting it)
UMASK = _umask()


def share_like_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``mkstemp``/``mkdtemp`` (0600/0700) the mode the umask gives ordinary files."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


def describe_os_error(path: str | os.PathLike, err: OSError) -> str:
    """One line for a failed write: the path and the reason in words."""
    reason = {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EEXIST: "exists already",
        errno.ENAMETOOLONG: "name too long",
        errno.ENOSPC: "no space left on the device",
    }.get(err.errno, err.strerror or str(err))
    if err.errno in _FULL:
        reason = "no space left on the device"
    return f"{path}: cannot write: {reason}"


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _FULL


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:  # pragma: no cover - an unreadable mount
        return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while True:
        try:
            os.lstat(p)
            return p
        except FileNotFoundError:
            if p == p.parent:  # pragma: no cover - the root always exists
                return p
            p = p.parent
        except NotADirectoryError:
            p = p.parent


def check_creatable(path: str | os.PathLike) -> None:
    """Refuse, with one line, a path whose parents cannot hold it (a file on the way, no permission, read-only)."""
    path = Path(path)
    base = _nearest_existing(path.parent if path.name else path)
    if not base.is_dir():
        raise OutputError(f"{path}: cannot be created: {base} is a file, not a directory")
    try:
        if os.statvfs(base).f_flag & os.ST_RDONLY:
            raise OutputError(f"{path}: cannot be created: {base} is on a read-only file system")
    except (AttributeError, OSError):  # pragma: no cover - no statvfs (Windows)
        pass
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot be created: no permission to write in {base}")


def make_parents(path: str | os.PathLike) -> None:
    """Create the parents of ``path`` (after :func:`check_creatable`), errors as one line."""
    path = Path(path)
    check_creatable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(describe_os_error(path.parent, err)) from None


def _listing(path: Path, limit: int = 3) -> str:
    names = []
    with os.scandir(path) as entries:
        for entry in entries:
            names.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            if len(names) > limit:
                break
    shown = ", ".join(brief(n)[1:-1] for n in sorted(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _is_empty_dir(path: Path, ignore: tuple[str, ...] = ()) -> bool:
    with os.scandir(path) as entries:
        return all(entry.name in ignore for entry in entries)


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The ``provenance.json`` of a directory if engraft wrote it (a JSON object naming an engraft version)."""
    try:
        with open(Path(path) / "provenance.json", "rb") as fh:
            data = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "engraft_version" in data else None


def _foreign_in_run_dir(path: Path) -> list[str]:
    """Names in an engraft run directory that engraft did not write there."""
    own = set(RUN_FILES) | set(RUN_EXTRAS)
    foreign = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name not in own:
                foreign.append(entry.name)
            elif entry.name == "figures" and entry.is_dir(follow_symlinks=False):
                if _foreign_figures(Path(entry.path)):
                    foreign.append("figures/")
    return sorted(foreign)


def check_run_dir(path: str | os.PathLike, force: bool = False) -> None:
    """Refuse an output path for a run directory that engraft may not replace (see the module rule).

    Parameters
    ----------
    path : the run directory to write.
    force : replace an earlier engraft run directory there.

    Raises
    ------
    OutputError
        One line: the path, what is there and what to do.
    """
    path = Path(path)
    if not os.path.lexists(path):
        check_creatable(path)
        return
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; engraft writes a run directory there: "
                          "choose another --out")
    if _is_empty_dir(path):
        check_creatable(path)
        return
    prov = read_provenance(path)
    if prov is None:
        raise OutputError(f"{path}: exists and is not an engraft run directory (it holds {_listing(path)}); "
                          "engraft never replaces what it did not write: choose another --out")
    foreign = _foreign_in_run_dir(path)
    if foreign:
        raise OutputError(f"{path}: an engraft run directory that also holds files engraft did not write "
                          f"({', '.join(brief(n)[1:-1] for n in foreign[:3])}); move them, or choose another --out")
    if not force:
        when = prov.get("finished_utc", "earlier")
        raise OutputError(f"{path}: holds an engraft run (finished {when}); pass --force to replace it, "
                          "or choose another --out")
    check_creatable(path)


def stage_dir(out: str | os.PathLike) -> Path:
    """A new temporary directory beside ``out`` (same file system, so a rename moves it into place)."""
    out = Path(out)
    make_parents(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise OutputError(describe_os_error(out, err)) from None
    share_like_umask(tmp, directory=True)
    return tmp


def commit_dir(tmp: Path, out: Path, *, replace_run: bool, owned: bool = False) -> None:
    """Move a finished ``tmp`` to ``out``: into a free or empty place, or over an engraft run directory.

    ``replace_run`` allows replacing an engraft run directory (checked again
    now: the place may have changed while the run ran). Anything else found
    at ``out`` is left alone, and the finished run is kept under a new name.
    ``owned`` says that ``out`` is a place engraft made for this run (a run of
    a sweep directory), whose old content, damaged or not, is replaced.
    """
    out = Path(out)
    if os.path.lexists(out) and not (out.is_dir() and not out.is_symlink() and _is_empty_dir(out)):
        own = owned or (out.is_dir() and not out.is_symlink() and read_provenance(out) is not None
                        and not _foreign_in_run_dir(out))
        if not (own and (replace_run or owned)):
            kept = out.with_name(f"{out.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            os.replace(tmp, kept)
            raise OutputError(f"{out}: something else was put there while the run ran; it was left alone "
                              f"and the finished run was written to {kept}")
        trash = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
        return
    if os.path.lexists(out):
        out.rmdir()  # the empty directory that was there
    os.replace(tmp, out)


def check_new_file(path: str | os.PathLike, force: bool = False, what: str = "file") -> None:
    """Refuse to write a single file over an existing one (unless ``force``) or where it cannot be created."""
    path = Path(path)
    if os.path.lexists(path):
        if path.is_dir():
            raise OutputError(f"{path}: is a directory; give a {what} path")
        if not force:
            raise OutputError(f"{path}: exists; engraft does not overwrite it unless you pass --force")
    check_creatable(path)


def check_sweep_dir(path: str | os.PathLike, spec_name: str = "sweep.json",
                    lock_name: str = ".sweep.lock") -> None:
    """Refuse a sweep directory that is a file or holds something other than an engraft sweep.

    A directory holding only a sweep's lock file is one that a sweep has just created.
    """
    path = Path(path)
    if not os.path.lexists(path):
        check_creatable(path)
        return
    if not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; a sweep writes a directory there: "
                          "choose another --out")
    if not (path / spec_name).exists() and not _is_empty_dir(path, ignore=(lock_name,)):
        raise OutputError(f"{path}: exists and is not an engraft sweep directory (no {spec_name}; it holds "
                          f"{_listing(path)}); engraft never writes into what it did not create: "
                          "choose another --out")
    check_creatable(path / spec_name)


def check_verification_dir(path: str | os.PathLike, marker: str = "verification.json") -> None:
    """Refuse a verification directory that is a file or holds something engraft did not write there.

    A new path, an empty directory or an earlier ``engraft verify`` directory
    (its ``verification.json`` names engraft, and it holds nothing but the
    report, the JSON and figures) may be written; the rest is refused.
    """
    path = Path(path)
    if not os.path.lexists(path):
        check_creatable(path)
        return
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; engraft verify writes a directory there: "
                          "choose another --out")
    if _is_empty_dir(path):
        check_creatable(path)
        return
    if not is_verification_dir(path, marker):
        raise OutputError(f"{path}: exists and is not an engraft verification directory (it holds "
                          f"{_listing(path)}); engraft never replaces what it did not write: choose another --out")
    check_creatable(path)


def is_verification_dir(path: str | os.PathLike, marker: str = "verification.json") -> bool:
    """An earlier ``engraft verify`` output: its marker file names engraft, and nothing else is there."""
    path = Path(path)
    try:
        with open(path / marker, "rb") as fh:
            data = json.loads(fh.read(1 << 24).decode("utf-8"))
    except (OSError, ValueError):
        return False
    if not (isinstance(data, dict) and data.get("written_by") == "engraft verify"):
        return False
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name in (marker, "report.md"):
                continue
            if entry.name == "figures" and entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as figs:
                    if any(not f.name.endswith(".png") or not f.is_file(follow_symlinks=False) for f in figs):
                        return False
                continue
            return False
    return True


# -- figure folders ------------------------------------------------------------------
def _read_manifest(folder: Path) -> list[str] | None:
    try:
        data = json.loads((folder / FIGURES_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def _foreign_figures(folder: Path) -> list[str]:
    own = set(_read_manifest(folder) or []) | {FIGURES_MANIFEST}
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name not in own)


class FigureFolder:
    """A folder that figures are written into, without ever overwriting a file engraft did not write.

    The folder keeps a manifest (:data:`FIGURES_MANIFEST`) of the files
    engraft wrote; a file of the same name that is not in it is refused.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: exists and is not a directory; give a folder for the figures")
        check_creatable(self.folder / FIGURES_MANIFEST)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(describe_os_error(self.folder, err)) from None
        self.written: list[str] = _read_manifest(self.folder) or []

    def claim(self, names: Iterable[str]) -> None:
        """Refuse up front if any of ``names`` exists and was not written by engraft."""
        for name in names:
            target = self.folder / name
            if os.path.lexists(target) and name not in self.written:
                raise OutputError(f"{target}: exists and was not written by engraft; it is left alone: "
                                  "choose another --out folder")

    def path(self, name: str) -> Path:
        """The path to write ``name`` at, after checking it; records it in the manifest."""
        self.claim([name])
        if name not in self.written:
            self.written.append(name)
            self._save_manifest()
        return self.folder / name

    def _save_manifest(self) -> None:
        from engraft.results import atomic_write_text

        atomic_write_text(self.folder / FIGURES_MANIFEST,
                          json.dumps({"written_by": "engraft", "files": sorted(self.written)}, indent=1))


def disk_full_failure(where: str | os.PathLike, kept: str) -> DiskFull:
    """The one-line failure for a full disk: where, how much is free, what was kept and how to go on."""
    free = free_bytes(where)
    left = f" ({free / 2**20:.0f} MiB free)" if free is not None else ""
    return DiskFull(f"{where}: the disk is full{left}: {kept}; free some space and rerun the same command")

"""The compiled cache: keyed on the kernel sources, outside the install, no clean-up on reinstall."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from engraft.kernel import jit

ROOT = Path(__file__).resolve().parents[1]


def test_digest_follows_every_compiled_source(tmp_path):
    """An edit to any compiled file (a helper in another file included) gives another cache folder;
    an edit elsewhere does not."""
    package = tmp_path / "engraft"
    shutil.copytree(ROOT / "engraft", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = jit.source_digest(package)
    assert before == jit.source_digest(ROOT / "engraft")
    for name in ("kernel/rules.py", "kernel/rng.py", "tally.py"):
        path = package / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        assert jit.source_digest(package) != before, name
        path.write_bytes(original)
    (package / "readouts.py").write_text("# not compiled\n")
    assert jit.source_digest(package) == before


def test_cache_goes_to_a_digest_folder_of_the_chosen_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    import numba

    old = numba.config.CACHE_DIR
    try:
        folder = jit.ensure_cache_dir()
        assert folder == str(tmp_path / f"numba-{jit.source_digest()}")
        assert numba.config.CACHE_DIR == folder and Path(folder).is_dir()
    finally:
        numba.config.CACHE_DIR = old


def test_the_running_cache_is_not_next_to_the_sources():
    assert jit.CACHE_DIR is not None
    assert not Path(jit.CACHE_DIR).resolve().is_relative_to((ROOT / "engraft").resolve())


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_plain_install_run_reinstall_run(tmp_path):
    """``pip install .`` (not editable) into a fresh venv, run, reinstall, run: no manual clean-up,
    nothing compiled left in site-packages, the same tables both times, and an edited kernel file
    compiled afresh into a new cache folder. Needs the package registry (pip) and a few minutes."""
    src = tmp_path / "src"
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    engraft = env_dir / "bin" / "engraft"
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("PYTHONPATH", None)
    tiny = src / "configs" / "tiny.yaml"

    def install():
        _run([str(python), "-m", "pip", "install", "-q", str(src)], env=env, cwd=tmp_path)

    def run(out):
        _run([str(engraft), "run", str(tiny), "--set", "time.duration_days=30", "-q", "--no-figure",
              "--out", str(tmp_path / out)], env=env, cwd=tmp_path)
        return (tmp_path / out / "timeseries.csv").read_text()

    def installed_compiled_files():
        site = Path(_run([str(python), "-c", "import engraft, os; print(os.path.dirname(engraft.__file__))"],
                         env=env, cwd=tmp_path).stdout.strip())
        return sorted(p.name for p in site.rglob("*") if p.suffix in (".nbi", ".nbc"))

    install()
    first = run("run1")
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 1 and folders[0].startswith("numba-")
    install()  # the same sources again
    assert run("run2") == first
    assert sorted(p.name for p in cache.iterdir()) == folders  # the same cache, reused
    assert installed_compiled_files() == []
    # an edit to a helper file: a new folder, compiled afresh (never the old code)
    rules = src / "engraft" / "kernel" / "rules.py"
    rules.write_text(rules.read_text() + "\n# an edit\n")
    install()
    assert run("run3") == first
    assert len(list(cache.iterdir())) == 2
    assert installed_compiled_files() == []
    assert sys.executable  # the test's own interpreter is untouched

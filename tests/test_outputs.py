"""Every writer follows one rule: create, replace only engraft's own, refuse the rest; nothing is lost.

Each case gives one line and exit status 2 (1 where runs started and the disk
filled), and leaves what was there byte for byte. Read-only and full file
systems are real: a small tmpfs in a private mount namespace (``unshare -m``,
as root), not a mock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engraft.cli import main
from tests.conftest import CONFIGS, ROOT

TINY = CONFIGS / "tiny.yaml"
QUICK = ["--set", "time.duration_days=2", "--no-figure", "-q"]


def tree(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (directories as 'dir')."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if a simulation starts: the refusal must come first."""
    import engraft.engines

    def refuse(*args, **kwargs):
        raise AssertionError("a simulation ran before the output was checked")

    monkeypatch.setattr(engraft.engines, "simulate", refuse)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweepfile") / "s2.yaml"
    path.write_text(f"experiment: {TINY}\nsweep:\n  replicates: 2\n  overrides: {{time.duration_days: 2}}\n")
    return path


# -- engraft run --out ----------------------------------------------------------------
def test_run_refuses_a_foreign_directory_and_leaves_it(tmp_path, capsys, no_simulation):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.txt").write_text("keep")
    before = tree(tmp_path)
    assert main(["run", str(TINY), "--out", str(precious), *QUICK]) == 2
    assert "is not an engraft run directory (it holds sub/, thesis.txt)" in one_error_line(capsys)
    assert main(["run", str(TINY), "--out", str(precious), "--force", *QUICK]) == 2  # --force changes nothing
    assert "never replaces what it did not write" in one_error_line(capsys)
    assert tree(tmp_path) == before


def test_run_refuses_an_existing_file_and_a_path_under_a_file(tmp_path, capsys, no_simulation):
    target = tmp_path / "results.txt"
    target.write_text("a user's file")
    before = tree(tmp_path)
    assert main(["run", str(TINY), "--out", str(target), *QUICK]) == 2
    assert "exists and is not a directory" in one_error_line(capsys)
    assert main(["run", str(TINY), "--out", str(target / "sub"), *QUICK]) == 2
    assert f"{target} is a file, not a directory" in one_error_line(capsys)
    assert tree(tmp_path) == before


def test_run_replaces_its_own_run_only_with_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TINY), "--out", str(out), *QUICK]) == 0
    first = tree(out)
    assert main(["run", str(TINY), "--out", str(out), "--seed", "5", *QUICK]) == 2
    assert "holds an engraft run" in one_error_line(capsys) and tree(out) == first
    assert main(["run", str(TINY), "--out", str(out), "--seed", "5", "--force", *QUICK]) == 0
    assert json.loads((out / "provenance.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left


def test_run_into_an_empty_directory(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["run", str(TINY), "--out", str(out), *QUICK]) == 0
    assert (out / "summary.json").is_file()


def test_run_files_are_readable_by_others_under_the_usual_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "shared"
        assert main(["run", str(TINY), "--out", str(out), *QUICK]) == 0
    finally:
        os.umask(old)
    import engraft.outputs

    if engraft.outputs.UMASK != 0o022:
        pytest.skip("engraft read a different umask at import")
    assert out.stat().st_mode & 0o777 == 0o755
    assert {(p.stat().st_mode & 0o777) for p in out.iterdir()} == {0o644}


# -- engraft sweep --out ----------------------------------------------------------------
def test_sweep_refuses_foreign_places(tmp_path, capsys, sweep_file):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    afile = tmp_path / "file"
    afile.write_text("x")
    before = tree(tmp_path)
    for out, message in [(foreign, "is not an engraft sweep directory (no sweep.json; it holds data.csv)"),
                         (afile, "exists and is not a directory"),
                         (afile / "sub", f"{afile} is a file, not a directory")]:
        assert main(["sweep", str(sweep_file), "--out", str(out), "-q", "--workers", "1"]) == 2
        assert message in one_error_line(capsys)
    assert tree(tmp_path) == before


def test_sweep_resume_reruns_damaged_runs_and_refuses_unreadable_spec(tmp_path, capsys, caplog, sweep_file):
    out = tmp_path / "sweep"
    argv = ["sweep", str(sweep_file), "--out", str(out), "-q", "--workers", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    summary = out / "runs" / "r00001" / "summary.json"
    good = summary.read_bytes()
    summary.write_bytes(good[:20])  # truncated
    assert main(["collect", str(out)]) == 0  # the table says so; no traceback
    assert "1 damaged" in capsys.readouterr().out
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "r00001 (summary.json does not parse)" in caplog.text  # said when the sweep starts
    assert "1 runs whose files no longer parsed were run again (r00001)" in captured.out
    assert summary.read_bytes() == good  # the same run again: the same bytes
    spec = out / "sweep.json"
    original = spec.read_bytes()
    for junk, message in [(b"\x89PNG\x00\xff", "binary, not JSON text"), (b"[]", "a JSON list, not an object"),
                          (b"{}", "no 'digest' entry"), (b'{"digest": "x", "engraft_version": "1", "runs": [1]}',
                                                          "runs[0] is not a run entry")]:
        spec.write_bytes(junk)
        for command in (argv, ["collect", str(out)]):
            assert main(command) == 2
            assert message in one_error_line(capsys)
        assert spec.read_bytes() == junk  # left as it was
    spec.write_bytes(original)
    assert main(["collect", str(out)]) == 0


# -- plot, animate, bench ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--set", "time.duration_days=30", "-q", "--no-figure"]) == 0
    return out


def test_plot_never_overwrites_a_file_it_did_not_write(tmp_path, capsys, run_dir):
    folder = tmp_path / "paper"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")
    assert main(["plot", str(run_dir), "--out", str(folder), "--format", "png"]) == 0  # beside other files
    capsys.readouterr()
    assert (folder / "notes.md").read_text() == "mine"
    assert main(["plot", str(run_dir), "--out", str(folder), "--format", "png"]) == 0  # its own: replaced
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "factor_level.png").write_bytes(b"a figure of the user's")
    assert main(["plot", str(run_dir), "--out", str(other), "--format", "png"]) == 2
    assert "factor_level.png: exists and was not written by engraft" in one_error_line(capsys)
    assert (other / "factor_level.png").read_bytes() == b"a figure of the user's"


def test_animate_needs_force_to_overwrite(tmp_path, capsys, run_dir):
    target = tmp_path / "movie.gif"
    target.write_bytes(b"GIF89a someone else's")
    assert main(["animate", str(run_dir), "--out", str(target)]) == 2
    assert "exists; engraft does not overwrite it unless you pass --force" in one_error_line(capsys)
    assert target.read_bytes() == b"GIF89a someone else's"
    assert main(["animate", str(run_dir), "--out", str(target / "x.gif")]) == 2
    assert "is a file, not a directory" in one_error_line(capsys)


def test_bench_refuses_a_foreign_results_file(tmp_path, capsys):
    target = tmp_path / "bench.json"
    target.write_text('{"mine": 1}')
    assert main(["bench", "--quick", "--out", str(target)]) == 2
    assert "is not an engraft benchmark results file" in one_error_line(capsys)
    assert target.read_text() == '{"mine": 1}'


# -- real read-only and full file systems -------------------------------------------------------
def namespace_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not namespace_available(),
                                     reason="needs root and unshare -m for a private tmpfs")


def in_namespace(script: str, tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace; $MNT is a fresh mount point, $E engraft."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "MNT": str(mnt), "E": f"{sys.executable} -m engraft", "TINY": str(TINY),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", "set -u\n" + script],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


@needs_namespace
def test_read_only_file_system(tmp_path, sweep_file):
    proc = in_namespace(f"""
mount -t tmpfs -o size=4m tmpfs "$MNT" && mkdir "$MNT/d" && mount -o remount,ro "$MNT" || exit 99
$E run "$TINY" --set time.duration_days=2 -q --no-figure --out "$MNT/d/run"; echo "run=$?"
$E sweep {sweep_file} -q --workers 1 --out "$MNT/d/sweep"; echo "sweep=$?"
$E plot /nonexistent --out "$MNT/d/figs"; echo "plot=$?"
""", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "run=2" in proc.stdout and "sweep=2" in proc.stdout, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert sum("is on a read-only file system" in line for line in lines) == 2, proc.stderr


@needs_namespace
def test_disk_full_stops_a_sweep_that_resumes_later(tmp_path):
    sweep = tmp_path / "s6.yaml"
    sweep.write_text(f"experiment: {TINY}\nsweep:\n  replicates: 6\n  overrides: {{time.duration_days: 2}}\n")
    # enough bytes, too few inodes: the disk fills after a few runs, past the up-front estimate
    proc = in_namespace(f"""
mount -t tmpfs -o size=64m,nr_inodes=40 tmpfs "$MNT" || exit 99
$E sweep {sweep} -q --workers 1 --out "$MNT/sweep"; echo "first=$?"
mount -o remount,nr_inodes=4000 "$MNT" || exit 98
$E sweep {sweep} -q --workers 1 --out "$MNT/sweep"; echo "second=$?"
ls "$MNT/sweep/runs" | tr '\\n' ' '; echo
""", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "first=1" in proc.stdout and "second=0" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    full = [line for line in proc.stderr.splitlines() if "the disk is full" in line]
    assert len(full) == 1, proc.stderr
    assert "runs are complete and kept" in full[0] and "rerun the same command" in full[0]
    assert proc.stdout.strip().splitlines()[-1].split() == [f"r{i:05d}" for i in range(6)]


@needs_namespace
def test_full_disk_is_refused_up_front_with_the_estimate(tmp_path):
    proc = in_namespace("""
mount -t tmpfs -o size=64k tmpfs "$MNT" || exit 99
$E run "$TINY" -q --no-figure --out "$MNT/run"; echo "run=$?"
""", tmp_path)
    assert "run=2" in proc.stdout, proc.stdout + proc.stderr
    assert "the output needs about" in proc.stderr and "MiB free there" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_namespace
def test_read_only_install_and_home_still_run(tmp_path):
    """Neither the sources nor $HOME writable: Numba caches in a private temporary folder."""
    proc = in_namespace(f"""
mount --bind -o ro {ROOT / 'engraft'} {ROOT / 'engraft'} || exit 99
export HOME=/proc XDG_CACHE_HOME=/proc/nowhere
$E --help > /dev/null; echo "help=$?"
$E run "$TINY" --set time.duration_days=2 -q --no-figure --out "{tmp_path}/run"; echo "run=$?"
""", tmp_path)
    assert "help=0" in proc.stdout and "run=0" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_plot_and_animate_refuse_a_damaged_run_directory(tmp_path, capsys, run_dir):
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    csv = (damaged / "timeseries.csv").read_bytes()
    (damaged / "timeseries.csv").write_bytes(csv[: len(csv) // 2])  # cut mid-line
    assert main(["plot", str(damaged), "--out", str(tmp_path / "figs")]) == 2
    assert "a damaged engraft run directory (timeseries.csv is cut short" in one_error_line(capsys)
    (damaged / "timeseries.csv").write_bytes(csv)
    (damaged / "snapshots.npz").write_bytes(b"PK\x03\x04 not a whole archive")
    assert main(["animate", str(damaged), "--out", str(tmp_path / "a.gif")]) == 2
    assert "snapshots.npz is not a complete archive" in one_error_line(capsys)
    assert not (tmp_path / "a.gif").exists()

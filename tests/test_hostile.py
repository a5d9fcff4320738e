"""Hostile and broken inputs: every one is refused with one line and exit status 2, fast, in bounded
memory, with no traceback and nothing written.

The corpus is ``tests/data/configs/invalid/``: each file's first line is
``# expect: MESSAGE`` (or, for files that cannot carry a comment such as
binary or UTF-16 ones, ``NAME.expect`` beside it holds the message). Files
holding a ``sweep:`` section go to ``engraft sweep``; the others to both
``engraft validate`` and ``engraft run --out``, which must refuse alike.
Inputs too large to keep in the repository are generated here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.isolated import IsolatedCLI

INVALID = Path(__file__).resolve().parent / "data" / "configs" / "invalid"
CORPUS = sorted(INVALID.glob("*.yaml"))
#: a hostile input is refused within this time (a hang guard, not a speed test: refusals take ms)
HANG_SECONDS = 30.0
#: and with at most this much memory beyond the interpreter's own
MEMORY_MIB = 200


def expected_message(path: Path) -> str:
    sidecar = path.with_suffix(".expect")
    if sidecar.exists():
        return sidecar.read_text(encoding="utf-8").strip()
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line or .expect file"
    return first[len("# expect: "):]


def is_sweep_file(path: Path) -> bool:
    return b"\nsweep:" in path.read_bytes()


@pytest.fixture(scope="module")
def cli():
    server = IsolatedCLI()
    yield server
    server.close()


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its size and content (what a command must leave alone)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = p.read_bytes() if p.is_file() else "dir"
    return out


def check_refused(cli, argv: list[str], expect: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = snapshot(work)
    result = cli.run(argv, cwd=work, timeout=HANG_SECONDS)
    assert not result.timed_out, f"{argv}: still running after {HANG_SECONDS} s"
    assert result.code == 2, f"{argv}: exit {result.code}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[:3000]
    assert expect in lines[0], f"expected {expect!r} in {lines[0]!r}"
    assert len(lines[0]) <= 700, f"a {len(lines[0])}-character message"
    assert result.grown_mib < MEMORY_MIB, f"{argv}: used {result.grown_mib:.0f} MiB"
    assert snapshot(work) == before, f"{argv}: wrote into its working directory"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_is_refused_by_every_command(cli, path, tmp_path):
    expect = expected_message(path)
    if is_sweep_file(path):
        commands = [["sweep", str(path), "--out", "out", "-q", "--workers", "1"]]
    else:
        commands = [["validate", str(path)], ["run", str(path), "--out", "out", "-q", "--no-figure"]]
    for argv in commands:
        check_refused(cli, argv, expect, tmp_path)


def test_every_corpus_file_has_its_message():
    for path in CORPUS:
        assert expected_message(path), path.name
    stray = [p.name for p in INVALID.glob("*.expect") if not p.with_suffix(".yaml").exists()]
    assert not stray


# -- inputs too large for the repository, made here --------------------------------------
TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def test_a_huge_config_is_refused_at_once(cli, tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as fh:
        fh.write(f"base: {TINY}\ndescription: |\n")
        line = "  " + "x" * 99 + "\n"
        for _ in range(57_000):  # 5.7 MB
            fh.write(line)
    check_refused(cli, ["validate", str(big)], "5.5 MiB is larger than a config file may be (1 MiB)", tmp_path)
    check_refused(cli, ["run", str(big), "--out", "out"], "is larger than a config file may be", tmp_path)


def test_huge_set_values_are_refused(cli, tmp_path):
    check_refused(cli, ["validate", str(TINY), "--set", "description=" + "[" * 5000 + "]" * 5000],
                  "--set description: line 1, column 1001: nested deeper than 50 levels", tmp_path)
    bomb = "{a: &a [l,l,l,l,l,l,l,l,l], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)) + "}"
    check_refused(cli, ["run", str(TINY), "--set", f"description={bomb}", "--out", "out"],
                  "--set description: line 1", tmp_path)
    check_refused(cli, ["run", str(TINY), "--set", "description=" + "y" * 2_000_000, "--out", "out"],
                  "--set description: 2,000,000 characters is more than a config may have", tmp_path)


@pytest.mark.parametrize("setting, expect", [
    ("infusions[0.dose_per_kg=1e8", "'infusions[0.dose_per_kg': unclosed '[' in the key path"),
    ("infusions[x].dose_per_kg=1e8", "list index must be an integer, got [x]"),
    ("infusions[0]dose_per_kg=1e8", "put a dot between ']' and the next name"),
    ("lattice..size=3", "empty name in the key path"),
    ("=3", "'': empty key path"),
    ("lattice.size", "expected KEY.PATH=VALUE"),
    ("lattice.size=yes", "lattice.size: must be a number, not true or false, got true"),
    ("patient.weight_kg=.nan", "patient.weight_kg: input should be a finite number, got nan"),
    ("infusions[9].homing=0.3", "infusions[9]: no such list item"),
    ("lattice.size.deeper=3", "lattice.size.deeper: parent is not a mapping"),
])
def test_bad_set_overrides(cli, setting, expect, tmp_path):
    check_refused(cli, ["validate", str(TINY), "--set", setting], expect, tmp_path)
    check_refused(cli, ["run", str(TINY), "--set", setting, "--out", "out"], expect, tmp_path)


def test_bad_paths(cli, tmp_path):
    check_refused(cli, ["validate", str(tmp_path / "missing.yaml")], "no such config file", tmp_path)
    check_refused(cli, ["validate", str(tmp_path)], "is a directory, not a config file", tmp_path)
    check_refused(cli, ["run", "/dev/zero", "--out", "out"], "not a regular file", tmp_path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block for ever
    check_refused(cli, ["validate", str(fifo)], "not a regular file", tmp_path)
    check_refused(cli, ["sweep", str(tmp_path / "none.yaml"), "--out", "o"], "no such config file", tmp_path)
    check_refused(cli, ["collect", str(tmp_path)], "not a sweep directory (no sweep.json)", tmp_path)


def test_a_closed_stdout_is_no_traceback():
    """``engraft validate FILE | head -0``: the reader is gone before engraft writes."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "engraft", "validate", str(TINY)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr  # as a Unix tool ended by SIGPIPE
    assert proc.stderr == ""


@pytest.mark.parametrize("setting, expect", [
    # each of these once started: a traceback after seconds (the infusions), or a run of days (the steps)
    ("infusions[0].dose_per_kg=1e30", "infusions[0].dose_per_kg: 1e+30 puts about 1.69e+23 cells into the blood"),
    ("marrow.hsc_count=1e-300", "marrow.hsc_count: input should be greater than or equal to 1"),
    ("time.duration_days=1e8", "time.duration_days: 1e+08 days with records every 5 days (daily while counts are "
                               "low): the run needs about 1884.9 GiB"),
    ("time.snapshot_interval_days=1e-9", "time.snapshot_interval_days: must be >= time.dt_days (0.2) or null"),
    ("time.snapshot_interval_days=0.2", None),  # 600 snapshots of a 32^2 lattice: a few MiB, allowed
    ("time.burn_in_days=1e12", "time.burn_in_days: 1e+12 days of burn-in and 120 of follow-up at dt_days 0.2 "
                               "make 5e+12 steps, more than a run may take (1e+09)"),
    ("time.dt_days=1e-9", "time.dt_days: 60 days of burn-in and 120 of follow-up at dt_days 1e-09 make 1.8e+11 "
                          "steps"),
])
def test_impossible_sizes_are_refused_with_the_estimate(cli, setting, expect, tmp_path):
    if expect is None:
        result = cli.run(["validate", str(TINY), "--set", setting], cwd=tmp_path, timeout=HANG_SECONDS)
        assert result.code == 0, result.stderr
        return
    check_refused(cli, ["validate", str(TINY), "--set", setting], expect, tmp_path)
    check_refused(cli, ["run", str(TINY), "--set", setting, "--out", "out"], expect, tmp_path)

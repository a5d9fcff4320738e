"""Config loading and validation: the valid/invalid corpus, overrides, bases, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engraft import ConfigError, load_config
from engraft.cli import main
from engraft.config.load import dump_config, split_key_path, validate

DATA = Path(__file__).resolve().parent / "data" / "configs"
ROOT = Path(__file__).resolve().parent.parent
VALID = sorted((DATA / "valid").glob("*.yaml"))
INVALID = sorted((DATA / "invalid").glob("*.yaml"))
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def expected_message(path: Path) -> str:
    from tests.test_hostile import expected_message as corpus_message

    return corpus_message(path)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_corpus_loads(path):
    exp = load_config(path)
    assert exp.lattice.n_sites > 0


@pytest.mark.parametrize("path", [p for p in SHIPPED if not p.stem.startswith("sweep_")],
                         ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    exp = load_config(path)
    from engraft.simulation import check_infusions

    check_infusions(exp)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_corpus_message(path):
    from engraft.engines import preflight
    from engraft.sweep import load_sweep
    from tests.test_hostile import is_sweep_file

    with pytest.raises(ConfigError) as info:
        if is_sweep_file(path):
            load_sweep(path)
        else:
            preflight(load_config(path))
    message = str(info.value)
    assert "\n" not in message
    assert expected_message(path) in message


@pytest.mark.parametrize("path", [p for p in INVALID if b"\nsweep:" not in p.read_bytes()], ids=lambda p: p.stem)
def test_cli_validate_invalid_is_one_line_exit_2(path, capsys):
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert expected_message(path) in err


def test_cli_subprocess_has_no_traceback():
    bad = DATA / "invalid" / "transduction_range.yaml"
    proc = subprocess.run([sys.executable, "-m", "engraft", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "engraft run: error: infusions[0].transduction: input should be less than or equal to 1, got 1.4"
    ]


def test_set_overrides_and_seed(tiny_path):
    exp = load_config(tiny_path, ["infusions[0].dose_per_kg=3e8", "lattice.size=40",
                                  "cell_types.HSC.self_renewal=0.6"], seed=7)
    assert exp.infusions[0].dose_per_kg == 3e8
    assert exp.lattice.size == 40
    assert exp.cell_types["HSC"].self_renewal == 0.6
    assert exp.seed == 7


def test_set_override_bad_value_names_key(tiny_path):
    with pytest.raises(ConfigError, match=r"^lattice\.dims: input should be 2 or 3, got 4$"):
        load_config(tiny_path, ["lattice.dims=4"])
    with pytest.raises(ConfigError, match="no such list item"):
        load_config(tiny_path, ["infusions[3].dose_per_kg=1"])


def test_base_merge_overrides_nested_fields(tiny):
    # tiny.yaml builds on base/mouse.yaml and overrides lattice.size only
    mouse = load_config(ROOT / "configs" / "base" / "mouse.yaml", [
        "transgene={factor: FVIII, mode: secreted, lineages: [myeloid], expression_per_vcn: 1}"])
    assert tiny.lattice.size == 32 and mouse.lattice.size == 128
    assert tiny.lattice.niche_fraction == mouse.lattice.niche_fraction
    assert tiny.cell_types == mouse.cell_types


def test_resolved_config_round_trips(tiny):
    import yaml

    again = validate(yaml.safe_load(dump_config(tiny)))
    assert again == tiny


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(evil)


def test_split_key_path():
    assert split_key_path("infusions[0].vcn.mean") == ["infusions", 0, "vcn", "mean"]
    assert split_key_path("a.b") == ["a", "b"]
    with pytest.raises(ConfigError):
        split_key_path("a[x]")


def test_dt_error_names_largest_dt(tiny_path):
    with pytest.raises(ConfigError) as info:
        load_config(tiny_path, ["time.dt_days=1.0"])
    # HSC: activation 0.067 (quiescent) vs division 0.5 + egress 0.02 + apoptosis 0.002 = 0.522 / day
    assert "largest dt that fits is 0.9578" in str(info.value)


def test_validate_prints_summary(tiny_path, capsys):
    assert main(["validate", str(tiny_path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "1,024 sites" in out

"""``engraft validate FILE``: check a config without running it."""

from __future__ import annotations

from engraft.config.load import estimate_memory_bytes, load_config
from engraft.engines import preflight
from engraft.scaling import calibration_notes, scale_notes, scales

HELP = "check a config file and print what it resolves to"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. --set infusions[0].dose_per_kg=6e6 (repeatable)")


def main(args) -> int:
    exp = load_config(args.config, args.overrides)
    preflight(exp)
    lat = exp.lattice
    sc = scales(exp)
    print(f"{args.config}: valid")
    engine = f"{exp.kernel} kernel" if exp.engine == "kernel" else "mesa"
    print(f"  experiment   {exp.name} (seed {exp.seed}, engine {engine})")
    print(f"  lattice      {lat.dims}D {lat.size}^{lat.dims} = {lat.n_sites:,} sites, "
          f"{lat.niche_fraction:.0%} niches ({lat.niche_placement}), {lat.neighbourhood}, {lat.boundary}")
    print(f"  scale        {sc[exp.hsc_type]:.3g} body HSCs and "
          f"{min(v for k, v in sc.items() if k != exp.hsc_type):.3g} body progenitors per lattice cell")
    notes = scale_notes(exp) | calibration_notes(exp)
    for key in ("hsc_scale_warning", "calibration_warning"):
        if notes[key]:
            print(f"  warning      {notes[key]}")
    if notes["calibration_note"]:
        print(f"  calibration  {notes['calibration_note']}")
    t = exp.time
    print(f"  time         {t.duration_days:g} days in steps of {t.dt_days:g}, records every "
          f"{t.record_interval_days:g}, burn-in {t.burn_in_days:g}")
    print(f"  memory       about {estimate_memory_bytes(exp) / 2**20:.1f} MiB")
    return 0

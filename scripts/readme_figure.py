"""Re-create docs/figures/hemophilia_a_summary.png, the README's figure.

Runs the default experiment with its own seed and writes its summary figure::

    python scripts/readme_figure.py
"""

from __future__ import annotations

from pathlib import Path

from engraft import load_config, simulate
from engraft.plots.summary import summary_figure

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    exp = load_config(ROOT / "configs" / "hemophilia_a_lentiviral.yaml")
    result = simulate(exp)
    out = ROOT / "docs" / "figures" / "hemophilia_a_summary.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_figure(result.timeseries, result.summary, out, title=exp.name)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

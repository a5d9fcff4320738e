"""The verification report: ``report.md``, ``verification.json`` and one figure per case."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from engraft._version import __version__
from engraft.verification.registry import CASES
from engraft.verification.stats import ALPHA, POWER

#: comparisons listed per case in report.md (the smallest p-values; every failing one is listed too)
LISTED = 14


def _num(x, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, float) and x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _verdict(ok: bool | None) -> str:
    return "PASS" if ok else "**FAIL**"


def write_report(verification, folder: Path) -> None:
    """Write the report files of ``verification`` into ``folder`` (a fresh, staged directory)."""
    figures = folder / "figures"
    figures.mkdir()
    for result in verification.results:
        if result.error is None and result.plot_data:
            path = figures / f"{result.name}.png"
            try:
                CASES[result.name].figure(result, result.plot_data, str(path))
                result.figure = f"figures/{path.name}"
            except Exception as err:  # a figure that cannot be drawn is said, not fatal
                result.notes.append(f"figure not drawn: {type(err).__name__}: {err}")
    data = {
        "written_by": "engraft verify", "engraft_version": __version__, "tier": verification.tier,
        "fault": verification.fault, "passed": verification.passed, "alpha": ALPHA, "power": POWER,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "executor": verification.executor, "workers": verification.workers,
        "wall_seconds": verification.wall_seconds, "cpu_seconds": verification.cpu_seconds,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": __import__("os").cpu_count()},
        "command": verification.command,
        "cases": [r.as_dict() for r in verification.results],
    }
    (folder / "verification.json").write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(verification), encoding="utf-8")


def markdown(v) -> str:
    lines = [f"# engraft verification report ({v.tier} tier)", ""]
    lines.append(f"engraft {__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                 f"{v.executor} ({v.workers} workers); wall time {v.wall_seconds:.0f} s, CPU time "
                 f"{v.cpu_seconds:.0f} s (this process and its local workers); {platform.platform()}.")
    if v.command:
        lines += ["", "Command: `" + " ".join(v.command) + "`"]
    if v.fault:
        lines += ["", f"**Deliberate fault injected: `{v.fault}`.** The cases below ran with it and are "
                      "expected to FAIL."]
    lines += ["", f"Every statistical comparison is a two-sided test at alpha = {ALPHA:g} divided by the number of "
                  "statistical comparisons of its case (Bonferroni). *Detectable* is the smallest deviation the "
                  f"comparison finds with {POWER:.0%} probability at that level (for KS: the sup-distance between "
                  "the distribution functions at which it rejects; for chi-square: Cohen's w). Exact comparisons "
                  "have a relative tolerance instead.", ""]
    lines += ["| case | verdict | comparisons | replicates | CPU s in jobs |", "|---|---|---|---|---|"]
    for r in v.results:
        lines.append(f"| [{r.name}](#{r.name}) | {_verdict(r.passed)} | {len(r.comparisons)} | "
                     f"{r.replicates} | {r.cpu_seconds:.0f} |")
    lines.append("")
    for r in v.results:
        lines += section(v, r)
    return "\n".join(lines) + "\n"


_KIND = {"mean": "mean against theory", "difference": "difference of means", "ks": "KS sup-distance",
         "binomial": "proportion against theory", "proportions": "difference of proportions",
         "chi2": "chi-square (Cohen's w)"}


def _power(kind: str, comps: list) -> str:
    values = [c.detectable for c in comps if c.detectable is not None and math.isfinite(c.detectable)]
    if not values:
        return f"{_KIND.get(kind, kind)}: n/a"
    lo, hi = min(values), max(values)
    span = _num(lo, 3) if lo == hi else f"{_num(lo, 3)} to {_num(hi, 3)}"
    return f"{_KIND.get(kind, kind)} ({len(comps)} comparisons): {span}"


def section(v, r) -> list[str]:
    out = [f"## {r.name}", "", f"**{r.title}** — {_verdict(r.passed)}", ""]
    if not r.passed:
        out += [f"Reproduce alone: `{v.reproduce(r)}`", ""]
    out += [f"*Compared.* {r.compared}", "", f"*Theory and tolerance.* {r.theory}", ""]
    if r.fault:
        out += [f"*Fault injected:* `{r.fault}`: {CASES[r.name].faults[r.fault]}.", ""]
    if r.error:
        out += ["```", r.error.strip()[-3000:], "```", ""]
        return out
    for title, cols, rows in r.tables:
        out += [f"*{title}*", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        out.append("")
    for note in r.notes:
        out += [note, ""]
    stat = [c for c in r.comparisons if c.statistical]
    exact = [c for c in r.comparisons if not c.statistical]
    if stat:
        level = stat[0].level
        worst = min(stat, key=lambda c: c.p_value if c.p_value is not None else 1.0)
        out += [f"{len(stat)} statistical comparisons at level {level:.3g} each; smallest p = "
                f"{_num(worst.p_value, 3)} ({worst.name}); {sum(not c.passed for c in stat)} failed.", ""]
    if stat:
        out += ["*Power* (the smallest deviation detected with 90 % probability at the case's level, in the "
                "units of each read-out; per comparison in the table and the JSON): "
                + "; ".join(_power(kind, [c for c in stat if c.kind == kind])
                            for kind in dict.fromkeys(c.kind for c in stat)) + ".", ""]
    listed = sorted(stat, key=lambda c: c.p_value if c.p_value is not None else 1.0)
    shown = [c for c in listed if not c.passed] + [c for c in listed if c.passed][:max(0, LISTED - sum(
        not c.passed for c in listed))]
    if len(shown) < len(stat):
        out += [f"The {len(shown)} comparisons with the smallest p-values (all {len(stat)} are in "
                "verification.json):", ""]
    rows = exact + shown
    if rows:
        out += ["| comparison | observed | expected | SE | statistic | p | level / tolerance | detectable | verdict |",
                "|---|---|---|---|---|---|---|---|---|"]
        for c in rows:
            lvl = f"rel. {c.tolerance:g}" if not c.statistical else _num(c.level, 3)
            out.append(f"| {c.name} | {_num(c.observed)} | {_num(c.expected)} | {_num(c.se, 3)} | "
                       f"{_num(c.statistic, 3)} | {_num(c.p_value, 3)} | {lvl} | {_num(c.detectable, 3)} | "
                       f"{_verdict(c.passed)} |")
        out.append("")
    if r.figure:
        out += [f"![{r.name}]({r.figure})", ""]
    out += [f"Replicates: {r.replicates}; job CPU time {r.cpu_seconds:.1f} s.", ""]
    return out

"""Per-patient distributions of a cohort: parsed from YAML, drawn by inverse CDF.

Every distribution maps a uniform number ``u`` in (0, 1) to a value through
its quantile function (``ppf``), so one mechanism serves plain Monte Carlo,
Latin-hypercube and Sobol designs, and a Gaussian copula (which correlates
the uniforms before they are mapped). Continuous distributions accept
``low`` / ``high`` bounds: the distribution is truncated to them
(``ppf(F(low) + u (F(high) - F(low)))``), and bounds that leave no mass are
an error.

==============  ===========================================  =================================
distribution    keys                                         notes
==============  ===========================================  =================================
lognormal       median, and cv or gsd; low, high             cv: arithmetic CV; gsd: geometric SD
normal          mean, sd; low, high                          with bounds: a truncated normal
truncnormal     mean, sd, low, high                          the same, bounds required
uniform         low, high
loguniform      low, high (> 0)
beta            a, b; low, high (default 0, 1)               scaled to [low, high]
choice          values, weights (default: equal)             discrete; weights are normalised
empirical       file, columns, replace (default true)        rows of a CSV of real patients
==============  ===========================================  =================================
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engraft.config.load import ConfigError
from engraft.config.safe_yaml import YAMLInputError, read_text
from engraft.errors import brief, one_line

#: keys each distribution takes (besides ``distribution`` and the cohort's own keys)
DISTRIBUTION_KEYS = {
    "lognormal": ("median", "cv", "gsd", "low", "high"),
    "normal": ("mean", "sd", "low", "high"),
    "truncnormal": ("mean", "sd", "low", "high"),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "beta": ("a", "b", "low", "high"),
    "choice": ("values", "weights"),
    "empirical": ("file", "columns", "replace"),
}
#: keys of a cohort parameter that are not the distribution's own
PARAMETER_KEYS = ("distribution", "paths", "apply", "source")


def _number(where: str, value: Any, *, positive: bool = False) -> float:
    try:  # YAML 1.1 reads 1.0e6 (no sign in the exponent) as a string
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {brief(value)}")
    if positive and number <= 0:
        raise ConfigError(f"{where}: must be > 0, got {brief(value)}")
    return float(number)


@dataclass(frozen=True)
class Distribution:
    """A univariate distribution: a frozen scipy.stats distribution, truncated to [low, high].

    Attributes
    ----------
    kind : the distribution's name as in the YAML file.
    frozen : the untruncated scipy.stats distribution (continuous kinds), or None.
    low, high : truncation bounds (-inf / inf when absent).
    values, weights : the support and probabilities of a ``choice``.
    """

    kind: str
    params: tuple
    frozen: Any = None
    low: float = -math.inf
    high: float = math.inf
    values: tuple = ()
    weights: tuple = ()

    @property
    def continuous(self) -> bool:
        return self.kind != "choice"

    def _mass(self) -> tuple[float, float]:
        lo = float(self.frozen.cdf(self.low)) if math.isfinite(self.low) else 0.0
        hi = float(self.frozen.cdf(self.high)) if math.isfinite(self.high) else 1.0
        return lo, hi

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Values at uniform numbers ``u`` (the quantile function of the truncated distribution)."""
        u = np.asarray(u, dtype=np.float64)
        if self.kind == "choice":
            cum = np.cumsum(self.weights)
            index = np.minimum(np.searchsorted(cum, u, side="right"), len(self.values) - 1)
            return np.asarray(self.values, dtype=object)[index]
        lo, hi = self._mass()
        x = self.frozen.ppf(lo + u * (hi - lo))
        return np.clip(x, self.low, self.high)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The CDF of the truncated distribution (continuous kinds; for tests and reports)."""
        lo, hi = self._mass()
        x = np.clip(np.asarray(x, dtype=np.float64), self.low, self.high)
        return (self.frozen.cdf(x) - lo) / (hi - lo)

    def describe(self) -> str:
        """A short description for reports, e.g. ``lognormal(median=70, cv=0.2) in [45, 150]``."""
        inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params)
        bounds = ""
        if self.continuous and (math.isfinite(self.low) or math.isfinite(self.high)) \
                and self.kind not in ("uniform", "loguniform", "beta"):
            bounds = f" in [{self.low:g}, {self.high:g}]"
        return f"{self.kind}({inner}){bounds}"


def parse_distribution(where: str, spec: dict) -> Distribution:
    """A :class:`Distribution` from one parameter's mapping (``distribution:`` and its keys).

    Raises
    ------
    ConfigError
        Naming the key: an unknown distribution, a missing or bad value,
        bounds that exclude all mass.
    """
    from scipy import stats

    kind = spec.get("distribution")
    if kind not in DISTRIBUTION_KEYS or kind == "empirical":
        allowed = ", ".join(DISTRIBUTION_KEYS)
        raise ConfigError(f"{where}.distribution: unknown distribution {brief(kind)}; allowed: {allowed}")
    allowed_keys = DISTRIBUTION_KEYS[kind]
    for key in spec:
        if key not in allowed_keys and key not in PARAMETER_KEYS:
            raise ConfigError(f"{where}.{key}: not a key of distribution {brief(kind)}; allowed keys: "
                              f"{', '.join(allowed_keys)}")

    def need(key: str, positive: bool = False) -> float:
        if key not in spec:
            raise ConfigError(f"{where}.{key}: required for distribution {brief(kind)}")
        return _number(f"{where}.{key}", spec[key], positive=positive)

    def bound(key: str, default: float) -> float:
        return _number(f"{where}.{key}", spec[key]) if key in spec else default

    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: must be a non-empty list, got {brief(values)}")
        weights = spec.get("weights", [1.0] * len(values))
        if not isinstance(weights, list) or len(weights) != len(values):
            raise ConfigError(f"{where}.weights: must be a list of {len(values)} numbers (one per value), "
                              f"got {brief(weights)}")
        w = np.array([_number(f"{where}.weights[{i}]", x) for i, x in enumerate(weights)])
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"{where}.weights: must be >= 0 with a positive sum, got {brief(weights)}")
        return Distribution(kind, (("values", values),), values=tuple(values), weights=tuple(w / w.sum()))

    low, high = bound("low", -math.inf), bound("high", math.inf)
    if kind == "lognormal":
        median = need("median", positive=True)
        if ("cv" in spec) == ("gsd" in spec):
            raise ConfigError(f"{where}: give exactly one of cv (arithmetic coefficient of variation) "
                              "and gsd (geometric standard deviation, > 1)")
        if "cv" in spec:
            cv = need("cv", positive=True)
            sigma = math.sqrt(math.log1p(cv * cv))
            params = (("median", median), ("cv", cv))
        else:
            gsd = need("gsd")
            if gsd <= 1:
                raise ConfigError(f"{where}.gsd: a geometric SD must be > 1, got {spec['gsd']!r}")
            sigma = math.log(gsd)
            params = (("median", median), ("gsd", gsd))
        frozen = stats.lognorm(s=sigma, scale=median)
    elif kind in ("normal", "truncnormal"):
        mean, sd = need("mean"), need("sd", positive=True)
        if kind == "truncnormal":
            low, high = need("low"), need("high")
        frozen = stats.norm(loc=mean, scale=sd)
        params = (("mean", mean), ("sd", sd))
    elif kind == "uniform":
        low, high = need("low"), need("high")
        if high <= low:
            raise ConfigError(f"{where}: high must be > low, got low={low:g}, high={high:g}")
        frozen = stats.uniform(loc=low, scale=high - low)
        params = (("low", low), ("high", high))
    elif kind == "loguniform":
        low, high = need("low", positive=True), need("high", positive=True)
        if high <= low:
            raise ConfigError(f"{where}: high must be > low, got low={low:g}, high={high:g}")
        frozen = stats.loguniform(low, high)
        params = (("low", low), ("high", high))
    else:  # beta
        a, b = need("a", positive=True), need("b", positive=True)
        low, high = bound("low", 0.0), bound("high", 1.0)
        if high <= low:
            raise ConfigError(f"{where}: high must be > low, got low={low:g}, high={high:g}")
        frozen = stats.beta(a, b, loc=low, scale=high - low)
        params = (("a", a), ("b", b), ("low", low), ("high", high))
    if high <= low:
        raise ConfigError(f"{where}: bounds exclude all mass (low={low:g} >= high={high:g})")
    dist = Distribution(kind, params, frozen=frozen, low=low, high=high)
    lo, hi = dist._mass()
    if not hi - lo > 1e-12:
        raise ConfigError(f"{where}: bounds [{low:g}, {high:g}] exclude all mass of {dist.describe()}")
    return dist


# ----------------------------------------------------------------------------------
# a CSV of real patient covariates
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmpiricalTable:
    """Rows of a CSV file, one per real patient; a virtual patient takes one whole row.

    Attributes
    ----------
    file : the CSV's path as given (resolved against the cohort file).
    columns : key path -> CSV column.
    replace : draw rows with replacement (a bootstrap of the table) or without
        (each row at most once; the cohort then has at most as many patients as rows).
    rows : the table's values, one tuple per row, in ``columns`` order.
    """

    file: str
    columns: tuple[tuple[str, str], ...]
    replace: bool
    rows: tuple[tuple, ...]


def parse_empirical(where: str, spec: dict, base_dir) -> EmpiricalTable:
    """Read the CSV of an ``empirical`` parameter; a missing file or column names the key."""
    from pathlib import Path

    import pandas as pd

    for key in spec:
        if key not in DISTRIBUTION_KEYS["empirical"] and key not in ("distribution",):
            raise ConfigError(f"{where}.{key}: not a key of distribution 'empirical'; allowed keys: "
                              f"{', '.join(DISTRIBUTION_KEYS['empirical'])}")
    file = spec.get("file")
    if not isinstance(file, str):
        raise ConfigError(f"{where}.file: must be the path of a CSV file (one row per patient), got {brief(file)}")
    columns = spec.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ConfigError(f"{where}.columns: must map config key paths to CSV columns, got {brief(columns)}")
    replace = spec.get("replace", True)
    if not isinstance(replace, bool):
        raise ConfigError(f"{where}.replace: must be true or false, got {brief(replace)}")
    path = Path(file) if Path(file).is_absolute() else Path(base_dir) / file
    try:  # a regular UTF-8 file of bounded size, as for configs
        text = read_text(path, what="CSV file of patient covariates")
    except YAMLInputError as err:
        raise ConfigError(f"{where}.file: {err}") from None
    try:
        table = pd.read_csv(io.StringIO(text))
    except ValueError as err:
        raise ConfigError(f"{where}.file: {path}: cannot read as CSV ({one_line(err, 160)})") from None
    for key_path, column in columns.items():
        if column not in table.columns:
            raise ConfigError(f"{where}.columns.{key_path}: column {brief(column)} is not in {path.name} "
                              f"(columns: {', '.join(map(str, table.columns))})")
        empty = np.flatnonzero(table[column].isna().to_numpy())
        if empty.size:
            raise ConfigError(f"{where}.columns.{key_path}: column {brief(column)} of {path.name} has "
                              f"{empty.size} empty cell(s), the first in row {empty[0] + 1} (the header not "
                              f"counted)")
    if len(table) == 0:
        raise ConfigError(f"{where}.file: {path} has no rows")
    cols = tuple((str(k), str(v)) for k, v in columns.items())
    rows = tuple(tuple(_plain(table[c].iloc[i]) for _, c in cols) for i in range(len(table)))
    return EmpiricalTable(file=file, columns=cols, replace=replace, rows=rows)


def _plain(value):
    """A CSV cell as a plain Python number or string (JSON- and YAML-friendly)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value

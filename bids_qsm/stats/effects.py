"""Guards and standardised effect sizes for the group models (pure numpy/scipy).

* :data:`MIN_RESIDUAL_DF`: a model with fewer residual degrees of freedom is not tested (no
  p, q, t or correlation is reported; the row says why in ``reason`` and is left out of the
  FDR). With df = 1, ``r = t / sqrt(t^2 + df)`` is about +-1 whatever the data: a degenerate
  fit, not a finding.
* :func:`model_problem`: why a model cannot be fitted at all (too few rows, singular design,
  constant measure), or None.
* :func:`standardized_difference`: Cohen's d of a covariate-adjusted group difference
  (``estimate / residual SD``), Hedges' small-sample correction and a 95% CI.
* :func:`read_exclusions`: the ``--exclude-participants`` list (labels and/or TSV files).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from bids_qsm.errors import InputDataError, InputMissingError

#: Smallest residual degrees of freedom of a model whose statistics are reported.
MIN_RESIDUAL_DF = 10


def model_problem(y: np.ndarray, X: np.ndarray) -> str | None:
    """Why ``y ~ X`` (OLS) cannot be estimated, or None.

    Reasons: fewer rows than parameters + 1, a rank-deficient (singular) design, or a measure
    that is constant up to rounding (e.g. a whole-brain mean of a map referenced to the brain).
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    n, k = X.shape
    if n <= k:
        return f"not estimable: {n} participant(s) for {k} model parameter(s)"
    rank = int(np.linalg.matrix_rank(X))
    if rank < k:
        return f"singular design (rank {rank} < {k} parameters)"
    if not np.isfinite(y).all():
        return "non-finite values"
    if float(np.ptp(y)) <= max(1e-7, 1e-9 * float(np.abs(y).max())):
        return "constant measure"
    return None


def df_problem(df_resid: float, minimum: int = MIN_RESIDUAL_DF) -> str | None:
    """``"residual df 7 < 10: not tested"`` when ``df_resid < minimum``, else None."""
    if not np.isfinite(df_resid) or df_resid < minimum:
        return f"residual df {df_resid:g} < {minimum}: not tested"
    return None


def hedges_correction(df: float) -> float:
    """Hedges' exact small-sample factor ``J(df) = G(df/2) / (sqrt(df/2) G((df-1)/2))``.

    About ``1 - 3 / (4 df - 1)``; NaN for df <= 1 (undefined).
    """
    if not df > 1:
        return float("nan")
    return float(math.exp(math.lgamma(df / 2) - 0.5 * math.log(df / 2) - math.lgamma((df - 1) / 2)))


def standardized_difference(
    estimate: float, resid_sd: float, n_case: int, n_control: int, df: float, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(Cohen's d, Hedges' g, g CI low, g CI high) of an adjusted group difference.

    ``d = estimate / resid_sd`` (the residual SD of the OLS model: the pooled within-group SD
    when there is no covariate, so d is then the textbook Cohen's d); ``g = J(df) d``; the CI
    uses the large-sample SE ``sqrt(1/n1 + 1/n2 + d^2 / (2 df))`` (Hedges & Olkin 1985),
    scaled by J. Units: none (SDs).
    """
    nan = float("nan")
    if not (np.isfinite(estimate) and np.isfinite(resid_sd) and resid_sd > 0 and df > 1):
        return nan, nan, nan, nan
    if n_case < 1 or n_control < 1:
        return nan, nan, nan, nan
    d = float(estimate / resid_sd)
    j = hedges_correction(float(df))
    se = math.sqrt(1.0 / n_case + 1.0 / n_control + d * d / (2.0 * df))
    z = float(sps.norm.ppf(0.5 + level / 2))
    g = j * d
    return d, g, g - z * j * se, g + z * j * se


# ----------------------------------------------------------------------------- exclusions
def _label(text: str) -> str:
    text = str(text).strip()
    return text if text.startswith("sub-") else f"sub-{text}"


def read_exclusions(items: Iterable[str | Path] | None, base: Path | None = None) -> dict[str, str]:
    """``{participant_id: reason}`` from ``--exclude-participants``.

    Each item is a label (``03`` or ``sub-03``), or a TSV file with a ``participant_id``
    column and an optional ``reason`` column (relative paths are taken from ``base``, else
    the current folder). Raises :class:`InputMissingError` (66) for a missing file and
    :class:`InputDataError` (65) for a TSV without ``participant_id``.
    """
    out: dict[str, str] = {}
    for item in items or []:
        text = str(item).strip()
        if not text:
            continue
        looks_like_file = text.endswith((".tsv", ".txt", ".csv")) or "/" in text
        if looks_like_file:
            path = Path(text).expanduser()
            if not path.is_absolute() and base is not None and not path.is_file():
                path = Path(base) / path
            if not path.is_file():
                raise InputMissingError("exclusion list not found", path)
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            if "participant_id" not in df.columns:
                raise InputDataError("exclusion list: no participant_id column", path)
            reasons = df["reason"] if "reason" in df.columns else [""] * len(df)
            for pid, why in zip(df["participant_id"], reasons, strict=True):
                if str(pid).strip():
                    out[_label(pid)] = str(why).strip() or f"listed in {path.name}"
        else:
            out[_label(text)] = "--exclude-participants"
    return dict(sorted(out.items()))

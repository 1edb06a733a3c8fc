"""Is a column's test accuracy really different from the reference column's?

Welch's t-test (unequal variances) on the seeds' final test accuracies: the p-value from
``scipy.stats.ttest_ind(equal_var=False)``, the 95% confidence interval of the difference
of means from Student's t at the Welch-Satterthwaite degrees of freedom
(``scipy.stats.t``). scipy is imported when a test is made, never at plugin import.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

ALPHA = 0.05
BETTER, WORSE = "better", "worse"
NO_DIFFERENCE = f"no significant difference at {ALPHA:g}"
ONE_SEED = "one seed: no test"
REFERENCE_ONE_SEED = "reference has one seed: no test"
NO_SPREAD = "no spread in either column: no test"


def welch(sample: Sequence[float], reference: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """``{diff, ci95, p, verdict, df}`` for mean(sample) - mean(reference).

    ``ci95`` is ``[low, high]`` (the ``1 - alpha`` interval); ``verdict`` is ``better`` or
    ``worse`` when ``p < alpha``, else ``no significant difference at 0.05``. With fewer
    than two values on a side nothing is tested (``diff`` is still given when both sides
    have a mean)."""
    n1, n2 = len(sample), len(reference)
    diff = statistics.fmean(sample) - statistics.fmean(reference) if n1 and n2 else None
    if n1 < 2 or n2 < 2:
        verdict = ONE_SEED if n1 < 2 else REFERENCE_ONE_SEED
        return {"diff": diff, "ci95": None, "p": None, "verdict": verdict, "df": None}
    from scipy import stats

    v1, v2 = statistics.variance(sample) / n1, statistics.variance(reference) / n2
    if v1 + v2 == 0:  # identical seeds on both sides: the t statistic is undefined
        return {"diff": diff, "ci95": None, "p": None, "verdict": NO_SPREAD, "df": None}
    p = float(stats.ttest_ind(sample, reference, equal_var=False).pvalue)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(1 - alpha / 2, df)) * math.sqrt(v1 + v2)
    assert diff is not None
    verdict = NO_DIFFERENCE if not p < alpha else (BETTER if diff > 0 else WORSE)
    return {"diff": diff, "ci95": [diff - half, diff + half], "p": p, "verdict": verdict, "df": df}


def describe(result: dict[str, Any]) -> str:
    """One cell: ``+1.23 pp [-0.40, +2.86], p = 0.12: no significant difference at 0.05``
    (differences of accuracies in percentage points)."""
    if result.get("p") is None:
        return result["verdict"]
    low, high = result["ci95"]
    p = result["p"]
    p_text = f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"
    return f"{100 * result['diff']:+.2f} pp [{100 * low:+.2f}, {100 * high:+.2f}], {p_text}: {result['verdict']}"

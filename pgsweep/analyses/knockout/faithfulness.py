"""How faithfully each score predicts what knocking out filters does, read off one model's
knockout summary: per score, over the knocked-out classes,

    spearman_oracle              rank correlation of the score with the oracle (each filter's
                                 own single-knockout loss increase); a random order has 0
    class_error_strongest        the class's error after its `after` strongest filters are gone
    overall_error_weakest        the error on all test images after its `after` weakest are gone
    ..._vs_random                the same minus the mean of the random orders, class by class
                                 (positive for strongest: hurts more than chance, as it should;
                                 negative for weakest: hurts less than chance, as it should)

each as the mean over classes with a 95% t interval (`_low`, `_high`). The oracle's own row
is the ceiling a score can reach.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
MEASURES = ("spearman_oracle", "class_error_strongest", "class_error_strongest_vs_random",
            "overall_error_weakest", "overall_error_weakest_vs_random")


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its t interval (NaN bounds for one value)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return (np.nan, np.nan, np.nan)
    mean = float(values.mean())
    if len(values) < 2:
        return (mean, np.nan, np.nan)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return (mean, mean - half, mean + half)


def faithfulness_table(summary: pd.DataFrame, after: int) -> pd.DataFrame:
    """One row per score (not random) from a knockout summary's per-class rows (class >= 0):
    score, classes, after, and each of MEASURES with `_low` and `_high`."""
    per_class = summary[summary["class"] >= 0]
    strongest, weakest = f"class_error_after_{after}_strongest", f"overall_error_after_{after}_weakest"
    random = per_class[per_class.score == "random"].set_index("class")
    rows = []
    for score, group in per_class[per_class.score != "random"].groupby("score", sort=False):
        group = group.set_index("class")
        chance = random.reindex(group.index)
        values = {
            "spearman_oracle": group.get("spearman_oracle", pd.Series(np.nan, group.index)),
            "class_error_strongest": group[strongest],
            "class_error_strongest_vs_random": group[strongest] - chance.get(
                f"class_error_after_{after}_random", np.nan),
            "overall_error_weakest": group[weakest],
            "overall_error_weakest_vs_random": group[weakest] - chance.get(
                f"overall_error_after_{after}_random", np.nan),
        }
        row = {"score": score, "classes": len(group), "after": after}
        for name in MEASURES:
            row[name], row[f"{name}_low"], row[f"{name}_high"] = mean_interval(values[name])
        rows.append(row)
    return pd.DataFrame(rows)

"""Section 8 of the thesis report (which score predicts knockout): every verdict function driven
to each outcome on synthetic tables, and the section rendered from stand-in jobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pgsweep.report.claims import faithfulness
from pgsweep.report.document import Document
from pgsweep.report.rules import load_rules
from pgsweep.report.verdicts import INCONCLUSIVE, NOT, PARTLY, REPRODUCED

RULES = load_rules()
CLASSES = 6


def _table(rho: dict[str, float], models: int = 5, noise: float = 0.02, saturation: float = 0.0,
           seed: int = 0) -> pd.DataFrame:
    """(model, class, score) rows: each score's Spearman around rho[score]; pg_softmax's lowered
    by `saturation` x the class's own-class probability (spread 0..1 over the classes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(models):
        for c in range(CLASSES):
            probability = c / (CLASSES - 1)
            for score, level in rho.items():
                value = level + noise * rng.standard_normal()
                if score == "pg_softmax":
                    value -= saturation * probability
                rows.append({"run": f"r{m}", "model": f"seed {m}", "class": c, "score": score,
                             "spearman_oracle": value, "own_probability": probability})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("rho", "models", "expected", "best"), [
    ({"pg_softmax": 0.15, "grad_x_activation": 0.85, "integrated_pg": 0.2}, 5, REPRODUCED, "grad_x_activation"),
    ({"pg_softmax": 0.15, "grad_x_activation": 0.40}, 5, PARTLY, "grad_x_activation"),  # better, but weak itself
    ({"pg_softmax": 0.15, "grad_x_activation": 0.22}, 5, PARTLY, "grad_x_activation"),  # short of the margin
    ({"pg_softmax": 0.15, "grad_x_activation": 0.15}, 5, NOT, "grad_x_activation"),
    ({"pg_softmax": 0.15, "grad_x_activation": 0.85}, 2, INCONCLUSIVE, "grad_x_activation"),
    ({"pg_softmax": 0.15}, 5, INCONCLUSIVE, ""),
])
def test_which_score_predicts_knockout_better_than_pg(rho, models, expected, best):
    verdict, chosen = faithfulness.verdict_better(_table(rho, models), "pg_softmax", RULES)
    assert verdict.outcome == expected, verdict.reason
    assert chosen == best
    assert "better_margin" not in verdict.rule and "0.1" in verdict.rule  # the rule states its numbers


@pytest.mark.parametrize(("outcomes", "expected"), [
    ({"pg_softmax": {"4b": NOT, "4c": REPRODUCED}, "grad_x_activation": {"4b": REPRODUCED, "4c": REPRODUCED}},
     REPRODUCED),
    ({"pg_softmax": {"4b": NOT, "4c": PARTLY}, "grad_x_activation": {"4b": PARTLY, "4c": PARTLY}}, PARTLY),
    ({"pg_softmax": {"4b": NOT, "4c": NOT}, "grad_x_activation": {"4b": NOT, "4c": INCONCLUSIVE}}, NOT),
    ({"pg_softmax": {"4b": REPRODUCED, "4c": REPRODUCED}, "grad_x_activation": {"4b": REPRODUCED, "4c": NOT}},
     INCONCLUSIVE),  # nothing to rescue
    ({"pg_softmax": {"4b": INCONCLUSIVE, "4c": NOT}, "grad_x_activation": {"4b": REPRODUCED, "4c": REPRODUCED}},
     INCONCLUSIVE),
])
def test_whether_a_score_reproduces_a_knockout_claim_pg_does_not(outcomes, expected):
    verdict = faithfulness.verdict_rescue(outcomes, "pg_softmax", "the rule")
    assert verdict.outcome == expected
    if expected in (REPRODUCED, PARTLY):
        assert "grad_x_activation 4b" in verdict.reason


@pytest.mark.parametrize(("saturation", "logit", "models", "expected"), [
    (0.6, 0.5, 5, REPRODUCED),    # PG much worse on the surer classes, and the logit's PG better
    (0.6, -0.1, 5, PARTLY),       # worse on the surer classes, but the logit's PG no better
    (-0.6, 0.5, 5, NOT),          # PG ranks better on the saturated classes (the finding)
    (0.6, 0.5, 2, INCONCLUSIVE),
])
def test_whether_pgs_weakness_follows_saturation(saturation, logit, models, expected):
    table = _table({"pg_softmax": 0.6, "pg_logit": 0.6 - 0.3 + logit}, models, saturation=saturation)
    verdict = faithfulness.verdict_saturation(table, "pg_softmax", RULES)
    assert verdict.outcome == expected, verdict.reason


def test_saturation_without_the_own_class_probability_is_inconclusive():
    table = _table({"pg_softmax": 0.2}).assign(own_probability=np.nan)
    assert faithfulness.verdict_saturation(table, "pg_softmax", RULES).outcome == INCONCLUSIVE


@pytest.mark.parametrize(("rho", "expected"), [
    ({"grad_x_activation": 0.86, "grad_x_activation_l2": 0.21}, REPRODUCED),
    ({"taylor_signed": 0.30, "taylor_abs": 0.23}, PARTLY),
    ({"grad_x_activation": 0.21, "grad_x_activation_l2": 0.21, "taylor_signed": 0.1, "taylor_abs": 0.1}, NOT),
    ({"grad_x_activation": 0.86, "pg_softmax": 0.15}, INCONCLUSIVE),  # no unsigned form to compare with
])
def test_whether_a_scores_weakness_follows_the_sign(rho, expected):
    verdict = faithfulness.verdict_sign(_table({"pg_softmax": 0.15, **rho}), RULES)
    assert verdict.outcome == expected, verdict.reason


def test_a_taylor_pair_counts_once_whichever_name_the_unsigned_form_has():
    effect, pairs = faithfulness.sign_effect(_table({"taylor_signed": 0.5, "taylor_abs": 0.2, "taylor": 0.2}))
    assert pairs == [("taylor_signed", "taylor_abs")]
    assert effect.mean() == pytest.approx(0.3, abs=0.05)


# ---------------------------------------------------------------- measured from stand-in jobs, rendered

class _Job:
    """A stand-in for results.Job: the knockout tables section 8 reads."""

    def __init__(self, number: int, scores: dict[str, float]) -> None:
        self.run_id, self.label, self.grouped, self.pg_score = f"r{number}", f"seed {number}, naive", False, "pg_softmax"
        self.metrics, self.params = {"final_test_error": 0.1}, {}
        rng = np.random.default_rng(number)
        frames, summary = [], []
        for c in range(3):
            for score, rho in scores.items():
                # a good score breaks its class at step 1 strongest-first and never weakest-first
                fail_strong, fail_weak = (1, 99) if rho > 0.5 else (8, 8)
                for direction, fail in (("strongest", fail_strong), ("weakest", fail_weak)):
                    frames.append(self._curve(c, score, direction, -1, fail))
                summary.append({"class": c, "class_name": f"s{c}", "score": score,
                                "spearman_oracle": rho + 0.01 * rng.standard_normal()})
            for seed in range(3):
                frames.append(self._curve(c, "random", "random", seed, 8))
        self.tables = {"knockout/curves.parquet": pd.concat(frames, ignore_index=True),
                       "knockout/summary.parquet": pd.DataFrame(summary)}

    @staticmethod
    def _curve(c, score, direction, seed, fail) -> pd.DataFrame:
        steps = np.arange(16)
        broken = (steps >= fail).astype(float)
        return pd.DataFrame({"class": c, "class_name": f"s{c}", "score": score, "direction": direction, "seed": seed,
                             "step": steps, "class_error": broken, "overall_error": broken * 0.5,
                             "class_loss": 0.1 + c, "emptied_layers": ""})

    @property
    def curves(self) -> pd.DataFrame:
        return self.tables["knockout/curves.parquet"]

    def table(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def departures(self, setup: dict) -> dict:
        return {}


def test_the_measure_reads_each_scores_spearman_and_the_own_class_probability():
    table = faithfulness.measure([_Job(0, {"pg_softmax": 0.1, "grad_x_activation": 0.9})])
    assert set(table.score) == {"pg_softmax", "grad_x_activation"} and len(table) == 6
    assert table[table["class"] == 2].own_probability.iloc[0] == pytest.approx(np.exp(-2.1))


def test_the_section_judges_every_question_and_draws_the_figure():
    jobs = [_Job(i, {"pg_softmax": 0.15, "grad_x_activation": 0.85, "grad_x_activation_l2": 0.2}) for i in range(4)]
    doc = Document()
    claims = faithfulness.section(doc, jobs, RULES)
    assert [c.key for c in claims] == ["F1", "F2", "F3", "F4"]
    outcomes = {c.key: c.verdict.outcome for c in claims}
    assert outcomes["F1"] == REPRODUCED and outcomes["F4"] == REPRODUCED
    # PG's weakest-first breaks the net as soon as random does (4c not reproduced); grad_x_activation's never
    assert outcomes["F2"] == REPRODUCED and "grad_x_activation 4c: reproduced (PG: not reproduced)" in claims[1].measured
    text = doc.markdown()
    assert "8. Which score predicts knockout" in text and "faithfulness.png" in text
    assert "faithfulness.better_margin=0.1" in text

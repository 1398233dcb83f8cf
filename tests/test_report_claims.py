"""The report's verdicts as stated tests: every verdict function driven to each of its outcomes
on small synthetic tables, the rules' checks, and the measures on stand-in job tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pgsweep.errors import ConfigError
from pgsweep.report.claims import consistency, error_rate, knockout, perturbations, scales
from pgsweep.report.rules import load_rules
from pgsweep.report.verdicts import (
    INCONCLUSIVE, NOT, PARTLY, REPRODUCED, Interval, Statistics, Verdict, bootstrap_mean, effect_verdict,
)

RULES = load_rules()


def _models(n: int) -> list[str]:
    return [f"seed {i}, naive" for i in range(n)]


# ---------------------------------------------------------------- the shared rule

@pytest.mark.parametrize(("low", "high", "models", "expected"), [
    (0.20, 0.30, 5, REPRODUCED), (0.02, 0.30, 5, PARTLY), (-0.05, 0.30, 5, NOT),
    (0.01, 0.05, 5, NOT),  # a real effect, but a tiny one: less than half the margin
    (0.20, 0.30, 2, INCONCLUSIVE), (-0.50, 0.60, 5, INCONCLUSIVE)])
def test_the_shared_effect_rule_reaches_each_outcome(low, high, models, expected):
    outcome, reason = effect_verdict(Interval((low + high) / 2, low, high, models), 0.1, Statistics())
    assert outcome == expected
    assert (reason == "") == (expected == REPRODUCED)


def test_the_thesis_number_failing_makes_reproduced_partly():
    outcome, reason = effect_verdict(Interval(0.3, 0.2, 0.4, 5), 0.1, Statistics(), holds=False, holds_text="x < y")
    assert (outcome, reason) == (PARTLY, "x < y")


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_agreement():
    stats = Statistics(bootstrap=500)
    wide = bootstrap_mean([0.0, 1.0, 0.0, 1.0, 0.5], stats)
    narrow = bootstrap_mean([0.5, 0.51, 0.49, 0.5, 0.5], stats)
    assert wide.estimate == pytest.approx(0.5) and wide.low < 0.5 < wide.high and narrow.width < wide.width / 10
    assert bootstrap_mean([0.1, 0.2, 0.3], stats) == bootstrap_mean([0.1, 0.2, 0.3], stats)  # seeded


def test_a_verdict_is_one_of_four():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Verdict("mostly", "rule")


# ---------------------------------------------------------------- 1: error rate

@pytest.mark.parametrize(("errors", "expected"), [
    ([2, 2, 2, 1, 3], REPRODUCED), ([3, 4, 3, 4, 3], PARTLY), ([9, 10, 8, 12, 9], NOT), ([2, 2], INCONCLUSIVE)])
def test_error_rate_verdict(errors, expected):
    table = pd.DataFrame({"test_error": np.array(errors) / 41, "test_images": 41})
    assert error_rate.verdict(table, RULES).outcome == expected


# ---------------------------------------------------------------- 2a, 2b: layers and scales

@pytest.mark.parametrize(("shares", "k", "expected"), [
    ([0.8, 0.7, 0.9, 0.8], 3, REPRODUCED), ([0.47, 0.48, 0.49, 0.48], 3, PARTLY), ([0.2, 0.1, 0.3, 0.2], 3, NOT),
    ([0.8, 0.7], 3, INCONCLUSIVE), ([0.8, 0.7, 0.9, 0.8], 2, INCONCLUSIVE)])
def test_layers_verdict(shares, k, expected):
    table = pd.DataFrame({"deepest_share": shares, "deepest_chance": 0.43, "listed_k": k})
    assert scales.verdict_layers(table, RULES).outcome == expected


@pytest.mark.parametrize(("ratios", "expected"), [
    ([200, 150, 300, 180], REPRODUCED), ([40, 30, 50, 45], PARTLY), ([3, 4, 2, 5], NOT),
    ([np.nan] * 4, INCONCLUSIVE), ([200, 300], INCONCLUSIVE)])
def test_scales_verdict_on_the_five_identities(ratios, expected):
    table = pd.DataFrame({"five_ratio": ratios, "all_class_ratio": 1000.0})  # the all-class ratio is not judged
    assert scales.verdict_scales(table, RULES).outcome == expected


# ---------------------------------------------------------------- 3: consistency

def _consistency(differences, vectors="fixed class") -> pd.DataFrame:
    return pd.DataFrame({"model": _models(len(differences)), "vectors": vectors, "difference": differences,
                         "p": 0.01})


@pytest.mark.parametrize(("differences", "vectors", "expected"), [
    ([0.30, 0.25, 0.35, 0.30, 0.28], "fixed class", REPRODUCED),
    ([0.035, 0.04, 0.035, 0.04, 0.035], "fixed class", PARTLY),
    ([-0.1, 0.05, -0.05, 0.0, 0.02], "fixed class", NOT),
    ([0.30, 0.25, 0.35, 0.30, 0.28], "own class", INCONCLUSIVE)])
def test_consistency_verdict(differences, vectors, expected):
    assert consistency.verdict(_consistency(differences, vectors), RULES).outcome == expected


def test_consistency_needs_the_test_across_models_too():
    # every model clears the margin, but 3 models give an across-model p of 1/8: not below 0.05
    verdict = consistency.verdict(_consistency([0.30, 0.25, 0.35]), RULES)
    assert verdict.outcome == PARTLY and "across-model p = 0.1250" in verdict.reason


def test_within_between_sees_a_class_pattern_and_its_permutation_test_fits():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    patterns = rng.normal(size=(5, 12))
    vectors = patterns[labels] + 0.3 * rng.normal(size=(20, 12))
    assert consistency.within_between(vectors, labels) > 0.5
    assert consistency.permutation_p(vectors, labels, 199, 0) == pytest.approx(1 / 200)
    noise = rng.normal(size=(20, 12))
    assert consistency.permutation_p(noise, labels, 199, 0) > 0.05
    assert consistency.sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(1 / 8)



def test_the_permutation_tests_batched_statistic_is_each_shuffles_own_and_its_p_counts_them():
    """The permutation test computes every shuffle's within - between in one product: each must
    equal within_between on that shuffle's labels, and p count the shuffles at or above."""
    rng = np.random.default_rng(3)
    labels = np.array([7, 2, 2, 9, 7, 9, 2, 7, 9, 9, 2])  # uneven classes, labels not 0..K-1
    vectors = rng.normal(size=(11, 6)) + 0.4 * (labels[:, None] == 2)
    corr = consistency.correlations(vectors)
    classes, codes = np.unique(labels, return_inverse=True)
    shuffles = [rng.permutation(labels) for _ in range(25)]
    batched = consistency._within_minus_between(
        corr, np.stack([np.searchsorted(classes, shuffle) for shuffle in shuffles]), len(classes))
    one_by_one = [consistency.within_between(vectors, shuffle) for shuffle in shuffles]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12, atol=1e-12)
    draws = np.random.default_rng(5)
    observed = consistency.within_between(vectors, labels)
    hits = sum(consistency.within_between(vectors, draws.permutation(labels)) >= observed - 1e-12 for _ in range(99))
    assert consistency.permutation_p(vectors, labels, 99, 5) == pytest.approx((hits + 1) / 100)


# ---------------------------------------------------------------- 4a-4f: knockout

def _pairs(models: int = 5, identities: int = 4, pg: float = 0.0, random: float = 0.0, intact: float = 0.1,
           orders: int = 10, noise: float = 0.01, seed: int = 0, **columns) -> pd.DataFrame:
    """(model, identity) rows: PG's numbers shifted by `pg` from the random orders' (`random`)."""
    rng = np.random.default_rng(seed)
    n = models * identities
    jitter = lambda: noise * rng.standard_normal(n)  # noqa: E731
    base = {"run": np.repeat([f"r{i}" for i in range(models)], identities), "model": np.repeat(_models(models), identities),
            "class": np.tile(np.arange(identities), models), "intact_error": intact, "random_orders": orders, "steps": 23,
            "area_random": 0.5 + jitter(), "area_strongest": 0.5 + pg + jitter(), "area_weakest": 0.5 - pg + jitter(),
            "class_error_0": 0.0, "class_error_few_strongest": 0.0 + jitter(),
            "class_error_after_random": random + jitter(), "class_error_after_strongest": random + pg + jitter(),
            "overall_error_after_random": random + jitter(), "overall_error_after_strongest": random + pg + jitter(),
            "overall_error_after_weakest": random - pg + jitter(), "overall_error_more_random": random + jitter(),
            "overall_error_more_weakest": random - pg + jitter()}
    base.update(columns)
    return pd.DataFrame(base)


# (key, PG's shift from random, the random orders' level): reproduced, partly, not reproduced
KNOCKOUT_CASES = {
    "4a": [(0.2, 0.5, REPRODUCED), (0.03, 0.5, PARTLY), (-0.02, 0.5, NOT)],
    "4b": [(0.6, 0.35, REPRODUCED), (0.6, 0.2, PARTLY), (0.0, 0.5, NOT)],  # partly: 0.8 error, short of 0.9
    "4c": [(0.2, 0.3, REPRODUCED), (0.05, 0.6, PARTLY), (-0.1, 0.3, NOT)],
    "4d": [(0.2, 0.55, REPRODUCED), (0.04, 0.4, PARTLY), (-0.1, 0.4, NOT)],
    "4e": [(0.3, 0.3, REPRODUCED), (0.07, 0.3, PARTLY), (-0.1, 0.3, NOT)],
}


@pytest.mark.parametrize(("key", "shift", "level", "expected"),
                         [(key, *case) for key, cases in KNOCKOUT_CASES.items() for case in cases])
def test_knockout_verdicts_against_the_random_orders(key, shift, level, expected):
    assert knockout.verdict(key, _pairs(pg=shift, random=level), RULES).outcome == expected


def test_knockout_intervals_do_not_depend_on_the_run_ids():
    """The bootstrap resamples models by position: the models must stay in the jobs' order
    (split, seed), not be sorted by their random MLflow run ids, or the same tables give
    other intervals in another run of the same command."""
    table = _pairs(pg=0.1, random=0.4, noise=0.05, seed=2)
    renamed = table.assign(run=table["run"].map(dict(zip(["r0", "r1", "r2", "r3", "r4"],
                                                         ["f3", "0a", "c7", "21", "9e"]))))
    for key in KNOCKOUT_CASES:
        assert knockout.verdict(key, renamed, RULES).reason == knockout.verdict(key, table, RULES).reason, key
    assert knockout.verdict_robust(renamed, RULES).reason == knockout.verdict_robust(table, RULES).reason


@pytest.mark.parametrize("key", list(KNOCKOUT_CASES))
def test_barely_trained_or_unpaired_models_cannot_test_a_knockout_claim(key):
    shift, level, _ = KNOCKOUT_CASES[key][0]
    for table in (_pairs(pg=shift, random=level, intact=0.9), _pairs(pg=shift, random=level, orders=0),
                  _pairs(models=2, pg=shift, random=level)):
        assert knockout.verdict(key, table, RULES).outcome == INCONCLUSIVE


def test_knockout_verdicts_use_whatever_number_of_random_orders_the_table_has():
    for orders in (3, 10, 40):
        assert knockout.verdict("4b", _pairs(pg=0.6, random=0.35, orders=orders), RULES).outcome == REPRODUCED


@pytest.mark.parametrize(("rise", "intact", "expected"), [
    (0.02, 0.1, REPRODUCED), (0.15, 0.1, PARTLY), (0.5, 0.1, NOT), (0.02, 0.9, INCONCLUSIVE)])
def test_removing_a_few_strong_filters_changes_little(rise, intact, expected):
    table = _pairs(intact=intact)
    table["class_error_few_strongest"] = rise + 0.01 * np.random.default_rng(1).standard_normal(len(table))
    assert knockout.verdict_robust(table, RULES).outcome == expected


class _Job:
    """A stand-in for results.Job: a label, metrics and the tables the claims read."""

    def __init__(self, number: int, tables: dict, metrics: dict | None = None) -> None:
        self.run_id, self.label, self.grouped = f"r{number}", f"seed {number}, naive", False
        self.pg_score, self.metrics, self.tables = "pg_softmax", metrics or {}, tables

    @property
    def curves(self) -> pd.DataFrame:
        return self.tables["knockout/curves.parquet"]

    def table(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def _curves(orders: int) -> pd.DataFrame:
    """One identity, 16 steps: PG strongest-first fails at step 1, weakest-first never, random at step 8."""
    frames = []
    for score, direction, seeds, fail in (("pg_softmax", "strongest", [-1], 1), ("pg_softmax", "weakest", [-1], 99),
                                          ("random", "random", range(orders), 8)):
        for seed in seeds:
            steps = np.arange(16)
            frames.append(pd.DataFrame({"class": 0, "class_name": "subject01", "score": score, "direction": direction,
                                        "seed": seed, "step": steps, "class_error": (steps >= fail).astype(float),
                                        "overall_error": (steps >= fail) * 0.5, "emptied_layers": ""}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("orders", [1, 40])
def test_the_knockout_measure_pairs_pg_with_the_models_own_random_orders(orders):
    (row,) = knockout.measure([_Job(0, {"knockout/curves.parquet": _curves(orders)}, {"final_test_error": 0.1})],
                              RULES).to_dict("records")
    assert row["random_orders"] == orders and row["steps"] == 15
    assert row["class_error_after_strongest"] == 1.0 and row["class_error_after_random"] == 1.0  # step 10
    assert row["class_error_few_strongest"] == 1.0 and row["overall_error_after_weakest"] == 0.0
    assert row["area_strongest"] == pytest.approx(14.5 / 15) and row["area_weakest"] == 0.0
    assert row["area_random"] == pytest.approx(7.5 / 15)  # trapezoid from step 7 to 8, then 1 to step 15


# ---------------------------------------------------------------- 6a, 6b: perturbations

def _success(gaps) -> pd.DataFrame:
    """(models, 4 targets): target 0's success above target 3's by each model's gap."""
    return pd.DataFrame([[0.3 + g / 2, 0.3, 0.3, 0.3 - g / 2] for g in gaps], index=_models(len(gaps)))


@pytest.mark.parametrize(("success", "expected"), [
    (_success([0.4, 0.5, 0.45, 0.4, 0.5, 0.45]), REPRODUCED),
    (_success([0.07, 0.08, 0.06, 0.07, 0.08, 0.07]), PARTLY),
    (_success([0.4, -0.4, 0.4, -0.4, 0.4, -0.4]), NOT),  # the easiest on one half is the hardest on the other
    (_success([0.4, 0.5]), INCONCLUSIVE)])
def test_easier_targets_are_chosen_on_one_half_and_tested_on_the_other(success, expected):
    assert perturbations.verdict_targets(success, RULES).outcome == expected


def _induced(gaps) -> pd.DataFrame:
    rows = [{"model": model, "rms_bin": b, "success": 0.2, "induced_error": 0.2 + gap}
            for model, gap in zip(_models(len(gaps)), gaps) for b in range(4)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("gaps", "expected"), [
    ([0.3, 0.35, 0.3, 0.4], REPRODUCED), ([0.07, 0.06, 0.08, 0.07], PARTLY), ([0.0, 0.0, 0.0, 0.0], NOT),
    ([0.3, 0.3], INCONCLUSIVE)])
def test_induced_error_against_success_at_the_same_pixel_rms(gaps, expected):
    assert perturbations.verdict_induced(_induced(gaps), RULES).outcome == expected


def test_without_a_pixel_rms_per_point_6b_is_inconclusive_and_says_why():
    points = pd.DataFrame({"image": [0, 0], "label": [0, 0], "target": [1, 2], "success": [True, False],
                           "induced_error": [True, True]})
    table = perturbations.measure_induced([_Job(0, {"adversarial/results.parquet": points})], RULES)
    verdict = perturbations.verdict_induced(table, RULES)
    assert verdict.outcome == INCONCLUSIVE and "no pixel_rms column" in verdict.reason


def test_6b_bins_the_points_by_their_own_pixel_rms():
    rng = np.random.default_rng(0)
    rms = rng.uniform(0, 1, 400)
    points = pd.DataFrame({"image": 0, "label": 0, "target": 1, "pixel_rms": rms,
                           "success": rms > 0.8, "induced_error": rms > 0.4})
    table = perturbations.measure_induced([_Job(i, {"adversarial/results.parquet": points}) for i in range(3)],
                                          load_rules(["induced.rms_bins=4"]))
    assert len(table) == 12 and table["points"].sum() == 1200
    low = table.sort_values("pixel_rms").iloc[0]
    assert low["induced_error"] == 0 and low["success"] == 0


# ---------------------------------------------------------------- the rules

@pytest.mark.parametrize(("override", "message"), [
    ("knockout.area_margin=abc", "knockout.area_margin must be a number"),
    ("statistics.bootstrap=1.5", "statistics.bootstrap must be an integer"),
    ("statistics.confidence=2", "statistics.confidence must be a number in [0.5"),
    ("knockout.nope=1", "unknown report rule 'knockout.nope'"),
    ("knockout", "is not KEY=VALUE"),
    ("knockout.after_more=5", "knockout.after_more must be at least knockout.after")])
def test_a_malformed_rule_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_rules([override])


def test_rules_override_and_print_as_they_are_overridden():
    rules = load_rules(["knockout.area_margin=0.25", "thesis_setup.trainer.max_epochs=30"])
    assert rules["knockout"]["area_margin"] == 0.25 and rules.thesis_setup["trainer.max_epochs"] == 30
    assert rules.text("knockout.area_margin", "targets") == "knockout.area_margin=0.25, targets.margin=0.1"
    table = _pairs(pg=0.1, random=0.5)  # strongest-first area 0.2 above weakest-first
    assert knockout.verdict("4a", table, RULES).outcome == REPRODUCED
    assert knockout.verdict("4a", table, rules).outcome == PARTLY


def test_the_report_cli_rejects_a_malformed_rule_with_one_line_and_exit_2():
    done = subprocess.run([sys.executable, "-m", "pgsweep.report", "f" * 32, "knockout.area_margin=abc"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == ("pgsweep: error: report rule knockout.area_margin must be a number in [0, 1], "
                                   "got 'abc'")


def test_the_thesis_multirun_rejects_a_malformed_rule_before_its_first_job(yale_root, tmp_path):
    script = Path(sys.executable).with_name("pgsweep")
    done = subprocess.run([str(script), "-m", "+sweep=thesis", f"data.root={yale_root}",
                           "report_rules.statistics.bootstrap=many"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("pgsweep: error: report rule statistics.bootstrap must be an "
                                                    "integer in [100, 1000000], got 'many'")
    assert not list(tmp_path.rglob("*.parquet"))  # no job ran


def test_each_departure_from_the_thesis_setup_is_named_with_its_count():
    from pgsweep.report.results import Job, setup_departures

    thesis = {"data.group_duplicates": "False", "data.test_fraction": "0.25", "data.equalize": "False"}
    jobs = [Job(None, f"r{i}", {"trainer.max_epochs": "30", "trainer.learning_rate": "0.1", **thesis,
                                "data.group_duplicates": str(i % 2 == 0)}, {}) for i in range(4)]
    line = setup_departures(jobs, RULES.thesis_setup)
    assert line == ("trainer.max_epochs=30 (thesis 250; 4 of 4 models); data.val_fraction=unset (thesis 0.0; 4 of 4 "
                    "models); data.group_duplicates=True (thesis false; 2 of 4 models); data.image_size=unset "
                    "(thesis 60; 4 of 4 models)")
    same = [Job(None, "r", {key.replace("thesis_setup.", ""): str(value) for key, value in RULES.thesis_setup.items()}, {})]
    assert setup_departures(same, RULES.thesis_setup) == ""


def test_a_section_whose_stage_was_left_out_reads_inconclusive_naming_what_is_missing():
    """A multirun without the diagrams stage: claim 3's metrics are absent. The report keeps
    going and says so, where it used to stop with a KeyError traceback."""
    from pgsweep.report.claims import consistency
    from pgsweep.report.document import Document, _section_or_missing

    body = Document()
    (claim,) = _section_or_missing(consistency, body, [_Job(0, {}, {"final_test_error": 0.1})], RULES)
    assert claim.verdict.outcome == "inconclusive"
    assert "did not log" in claim.verdict.reason and "diagrams" in claim.verdict.reason
    assert "Not measured" in body.markdown()


def test_figures_4_1_and_4_2_show_the_thesis_five_or_the_first_five_knocked_classes():
    """A knockout run on some of the classes (analysis.knockout.classes) must not break the report:
    the thesis's five identities when all were knocked out, else the first five that were."""
    from pgsweep.plots.common import THESIS_IDENTITIES

    def job(knocked: dict[int, str]) -> _Job:
        curves = pd.concat([_curves(2).assign(**{"class": c, "class_name": name}) for c, name in knocked.items()],
                           ignore_index=True)
        return _Job(0, {"knockout/curves.parquet": curves})

    everyone = {c: f"subject{c + 1:02d}" for c in range(15)}
    five = sorted(c for c, name in everyone.items() if name in THESIS_IDENTITIES)
    assert knockout.shown_classes(job(everyone)) == [c for c in (
        next(k for k, n in everyone.items() if n == name) for name in THESIS_IDENTITIES)]
    assert sorted(knockout.shown_classes(job(everyone))) == five
    some = {c: everyone[c] for c in (1, 3, 8, 9, 11, 13, 14)}  # the thesis's five not all among them
    assert knockout.shown_classes(job(some)) == [1, 3, 8, 9, 11]

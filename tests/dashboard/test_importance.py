"""Hyperparameter importance for the objective or a stored metric, as Optuna itself rates it."""
from __future__ import annotations

import warnings

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from dashboard import resources

SPACE = {"lr": FloatDistribution(1e-5, 1e-3, log=True), "warmup": FloatDistribution(0.0, 0.3),
         "batch": CategoricalDistribution([8, 16])}


def built_study(n: int = 60) -> tuple[optuna.Study, pd.Series]:
    """The objective (accuracy) follows lr only; a stored metric (loss) follows warmup only.

    A pruned trial and a complete trial without a stored metric show that only complete
    trials with the metric are rated.
    """
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    loss = {}
    for number in range(n):
        params = {"lr": float(10 ** rng.uniform(-5, -3)), "warmup": float(rng.uniform(0, 0.3)),
                  "batch": int(rng.choice([8, 16]))}
        accuracy = 0.9 + 0.02 * np.log10(params["lr"] / 1e-5) + 0.001 * rng.normal()
        state = TrialState.PRUNED if number == 5 else TrialState.COMPLETE
        study.add_trial(create_trial(state=state, params=params, distributions=SPACE,
                                     value=None if state == TrialState.PRUNED else accuracy))
        if state == TrialState.COMPLETE and number != 7:
            loss[number] = 0.3 + params["warmup"] + 0.001 * rng.normal()
    return study, pd.Series(loss, dtype=float)


def copied_study(study: optuna.Study, values: pd.Series, direction: str) -> optuna.Study:
    """A study whose objective is `values`: how Optuna rates that target directly."""
    copy = optuna.create_study(direction=direction)
    copy.add_trials([create_trial(params=t.params, distributions=t.distributions,
                                  value=float(values[t.number]))
                     for t in study.get_trials(states=(TrialState.COMPLETE,))
                     if t.number in values.index])
    return copy


def optuna_evaluator(name: str) -> optuna.importance.BaseImportanceEvaluator:
    """The dashboard's evaluators: seeded forests of a fixed size, PED-ANOVA as it comes."""
    forest = {"n_trees": resources.FOREST_TREES, "max_depth": resources.FOREST_DEPTH, "seed": 0}
    return {"fANOVA": optuna.importance.FanovaImportanceEvaluator(**forest),
            "mean decrease impurity":
                optuna.importance.MeanDecreaseImpurityImportanceEvaluator(**forest),
            "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator()}[name]


def objective_values(study: optuna.Study) -> pd.Series:
    return pd.Series({t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))})


@pytest.mark.parametrize("evaluator", resources.EVALUATORS)
@pytest.mark.parametrize(("target", "direction"), [("objective", "maximize"),
                                                   ("loss", "minimize"),
                                                   ("negated loss", "maximize")])
def test_importance_of_a_target_equals_optuna_on_a_study_of_that_target(
        evaluator: str, target: str, direction: str) -> None:
    study, loss = built_study()
    values = {"objective": objective_values(study), "loss": loss, "negated loss": -loss}[target]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = resources.param_importances(study, values, evaluator, direction)
    want = optuna.importance.get_param_importances(
        copied_study(study, values, direction), evaluator=optuna_evaluator(evaluator))
    assert got == pytest.approx(want, abs=1e-12) and list(got) == list(want)
    assert set(got) == set(SPACE) and sum(got.values()) == pytest.approx(1.0)
    assert not [w for w in caught if "low `target` values" in str(w.message)]


@pytest.mark.parametrize("evaluator", resources.EVALUATORS)
def test_importance_of_a_stored_metric_differs_from_the_objective(evaluator: str) -> None:
    study, loss = built_study()
    for_objective = resources.param_importances(study, objective_values(study), evaluator,
                                                "maximize")
    for_loss = resources.param_importances(study, loss, evaluator, "minimize")
    assert max(for_objective, key=for_objective.get) == "lr"
    assert max(for_loss, key=for_loss.get) == "warmup"
    assert for_loss["warmup"] > 0.5 > for_objective["warmup"]


def test_importance_needs_two_trials_with_the_target() -> None:
    study, loss = built_study(n=10)
    assert resources.param_importances(study, loss.iloc[:1], "fANOVA", "minimize") == {}
    assert resources.param_importances(study, pd.Series(dtype=float), "PED-ANOVA",
                                       "minimize") == {}

"""Hyperparameter importance from the results store alone (no journal, no training code).

An in-memory Optuna study is rebuilt from ``trials.parquet``: one COMPLETE trial per trial
that produced a score (completed, stopped early by the scheduler, or diverged), its value the
best validation metric it reached, its distributions those recorded in experiment.json.
fANOVA (a random forest's variance decomposition) and PED-ANOVA (which parameters separate
the top quantile of trials from the rest) are then Optuna's own evaluators.

    from analysis.results import load_experiment
    from analysis.importance import importance_table
    importance_table(load_experiment("results/qs"))
"""

from __future__ import annotations

import logging
import math

import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState, create_trial

from analysis.results import Experiment, best_column
from analysis.space import searched_params

log = logging.getLogger(__name__)

SCORED_STATUSES = ("completed", "stopped", "diverged")
MIN_TRIALS = 4  # fewer trials than this cannot separate any parameter's effect from noise


def build_study(exp: Experiment) -> optuna.Study:
    """An in-memory study with one COMPLETE trial per scored trial of the experiment."""
    params = searched_params(exp.meta, exp.trials)
    value_col = best_column(exp.metric)
    study = optuna.create_study(
        study_name=exp.name,
        direction="maximize" if exp.mode == "max" else "minimize",
        storage=optuna.storages.InMemoryStorage(),
    )
    scored = exp.trials[exp.trials["status"].isin(SCORED_STATUSES)]
    distributions = {p.path: p.distribution() for p in params}
    for _, row in scored.iterrows():
        value = float(row[value_col])
        if not math.isfinite(value):
            continue
        values = {}
        for p in params:
            raw = row[p.column]
            values[p.path] = p.choice_of(raw) if p.categorical else (int(raw) if p.kind == "randint" else float(raw))
        study.add_trial(
            create_trial(
                params=values,
                distributions=distributions,
                value=value,
                state=TrialState.COMPLETE,
                user_attrs={"trial_id": row["trial_id"], "status": row["status"]},
            )
        )
    return study


def importance_table(exp: Experiment, seed: int = 0) -> pd.DataFrame:
    """fANOVA and PED-ANOVA importance per searched parameter, most important first.

    Empty when there are fewer than ``MIN_TRIALS`` scored trials, no searched parameter, or
    every trial scored the same (nothing to explain)."""
    study = build_study(exp)
    trials = study.get_trials(deepcopy=False)
    searched = [p.path for p in searched_params(exp.meta, exp.trials)]
    varying = [p for p in searched if len({str(t.params[p]) for t in trials}) > 1]
    if len(trials) < MIN_TRIALS or not varying or len({t.value for t in trials}) < 2:
        return pd.DataFrame(columns=["parameter", "fanova", "ped_anova"])
    fanova = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varying)
    try:
        ped = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=varying)
    except (ValueError, RuntimeError) as err:  # needs enough trials in its top quantile
        log.info("PED-ANOVA not computed: %s", err)
        ped = {}
    frame = pd.DataFrame(
        {
            "parameter": varying,
            "fanova": [float(fanova.get(p, 0.0)) for p in varying],
            "ped_anova": [float(ped[p]) if p in ped else float("nan") for p in varying],
        }
    )
    return frame.sort_values("fanova", ascending=False, ignore_index=True)

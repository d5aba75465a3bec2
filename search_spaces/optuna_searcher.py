"""Optuna TPE as a Ray Tune searcher, with honest bookkeeping.

Ray's stock ``OptunaSearch`` tells Optuna that a trial ASHA stopped after one
epoch is COMPLETE with its epoch-1 score. That teaches TPE that early scores are
final scores. ``HonestOptunaSearch`` instead:

- reports every epoch's metric as an Optuna intermediate value (``trial.report``);
- tells a trial that ended before its last epoch as PRUNED (Optuna's TPE then
  treats it as a pruned trial at its last intermediate value);
- tells trials that ran every epoch as COMPLETE, diverged trials as COMPLETE with
  the worst value (the config is genuinely bad), out-of-memory trials and errors
  as FAIL (the outcome says nothing about the hyperparameters' quality);
- never leaves a trial RUNNING: on restore after a driver crash, Optuna trials
  that Ray never recorded are told FAIL.

The study lives in an Optuna journal file (``optuna.journal`` in the experiment
folder), so ``optuna-dashboard optuna.journal`` and Optuna's importance tools
open it directly.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)

STUDY_NAME = "tunelab"


def open_study(journal: Path, direction: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(
        study_name=STUDY_NAME, storage=storage, direction=direction, sampler=sampler, load_if_exists=True
    )


class HonestOptunaSearch(Searcher):
    """Optuna TPE (seeded, multivariate, constant liar) with PRUNED/FAIL bookkeeping."""

    def __init__(
        self,
        space: dict[str, Any],
        metric: str,
        mode: str,
        journal: Path,
        max_epochs: int,
        seed: int = 0,
        worst_value: float = 0.0,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._journal = Path(journal)
        self._max_epochs = max_epochs
        self._seed = seed
        self._worst = worst_value
        self._distributions = OptunaSearch.convert_search_space(
            {k: v for k, v in space.items() if hasattr(v, "sample")}
        )
        self._constants = {k: v for k, v in space.items() if not hasattr(v, "sample")}
        self._live: dict[str, int] = {}  # Ray trial id → Optuna trial number
        self._last_epoch: dict[str, int] = {}
        self._study: optuna.Study | None = None

    # -- Optuna objects are rebuilt on demand so the searcher pickles as plain state.
    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            sampler = optuna.samplers.TPESampler(seed=self._seed, multivariate=True, constant_liar=True)
            self._study = open_study(self._journal, "maximize" if self.mode == "max" else "minimize", sampler)
        return self._study

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and space are fixed at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._settle_after_restore()
        trial = self.study.ask(self._distributions)
        self._live[trial_id] = trial.number
        trial.set_user_attr("ray_trial_id", trial_id)
        return {**self._constants, **trial.params}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        number = self._live.get(trial_id)
        value = result.get(self.metric)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if number is None or value is None or not _finite(value):
            return
        if result.get("status") in ("diverged", "oom"):
            return  # the adapter's placeholder worst values, not a measurement
        if epoch > self._last_epoch.get(trial_id, 0):
            self.study._storage.set_trial_intermediate_value(self._trial_id(number), epoch, float(value))
            self._last_epoch[trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._settle_after_restore()
        if result and not error:
            # A trial's last result often reaches the searcher only here (the scheduler's STOP at
            # max_t skips on_trial_result), so record it while the trial is still live.
            self.on_trial_result(trial_id, result)
        number = self._live.pop(trial_id, None)
        if number is None:
            return
        self._last_epoch.pop(trial_id, None)
        state, value, reason = self._outcome(result, error)
        trial = self._frozen(number)
        if trial.state != TrialState.RUNNING:
            return
        self.study._storage.set_trial_user_attr(trial._trial_id, "tunelab_outcome", reason)
        if state == TrialState.COMPLETE:
            self.study.tell(number, value)
        else:
            self.study.tell(number, state=state)

    def _outcome(self, result: dict[str, Any] | None, error: bool) -> tuple[TrialState, float | None, str]:
        if error or not result:
            return TrialState.FAIL, None, "error" if error else "never ran"
        status = result.get("status")
        if status == "diverged":
            return TrialState.COMPLETE, self._worst, "diverged"
        if status == "oom":
            return TrialState.FAIL, None, "oom"
        value = result.get(self.metric)
        if status == "completed" and value is not None and _finite(value):
            return TrialState.COMPLETE, float(value), "completed"
        if status == "completed":
            return TrialState.FAIL, None, "no metric"
        return TrialState.PRUNED, None, "stopped by scheduler"

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.study._storage.get_trial(self._trial_id(number))

    def _trial_id(self, number: int) -> int:
        return self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)

    def fail_orphans(self) -> int:
        """Tell FAIL every RUNNING Optuna trial that no live Ray trial owns (after a crash)."""
        owned = set(self._live.values())
        count = 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in owned:
                self.study._storage.set_trial_user_attr(
                    trial._trial_id, "tunelab_outcome", "lost when the driver stopped"
                )
                self.study.tell(trial.number, state=TrialState.FAIL)
                count += 1
        return count

    # -- Ray saves and restores the searcher with the experiment state.
    def get_state(self) -> dict[str, Any]:
        return {
            "live": dict(self._live),
            "last_epoch": dict(self._last_epoch),
            "journal": str(self._journal),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._live = dict(state["live"])
        self._last_epoch = dict(state["last_epoch"])
        self._restored = True

    def _settle_after_restore(self) -> None:
        if getattr(self, "_restored", False):
            self._restored = False
            lost = self.fail_orphans()
            if lost:
                log.warning("told Optuna FAIL for %d trial(s) lost when the driver stopped", lost)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))  # our own file, written by save() above

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_study"] = None
        return state


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False

"""The W&B callback the Tuner gets: Ray's ``WandbLoggerCallback`` with tunelab's runs.

Built by ``search_spaces.tracking.search_callbacks`` (``tune.py --wandb PROJECT``). Each trial
gets a logging actor on the driver's node (Ray's design: wandb wants a process per run);
the callback feeds it the per-epoch metrics through a Ray queue, and the actor writes the
run. A failing actor or queue stops W&B logging for that trial only; trials never wait on W&B.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node
from ray.util.queue import Empty

from search_spaces.tracking import (
    UPLOAD_TIMEOUT_S,
    WandbPlan,
    epoch_record,
    init_with_fallback,
    public_config,
    trial_status,
)

log = logging.getLogger(__name__)

END_GRACE_S = 60.0  # after the end message, how long a run waits for results still in flight


class TrialRunsCallback(WandbLoggerCallback):
    """Ray's W&B logger callback with tunelab's run identity, metric names and failure handling."""

    def __init__(self, plan: WandbPlan) -> None:
        super().__init__(project=plan.project, group=plan.group, upload_timeout=int(UPLOAD_TIMEOUT_S))
        self.plan = plan
        self._given_up: set[str] = set()  # trials whose logging failed: W&B leaves them alone
        self._ended: set[str] = set()  # trials whose run was told to finish
        self._sent: dict[str, int] = {}  # results sent per trial: their sequence numbers

    def setup(self, *args: Any, **kwargs: Any) -> None:
        # Ray's setup demands a key unless WANDB_MODE says offline; the plan has already decided.
        pass

    def log_trial_start(self, trial: Any) -> None:
        if trial.trial_id in self._given_up:
            return
        if self._remote_logger_class is None:
            # Ray's default hands WANDB_API_KEY to the actor as a runtime environment, and Ray's
            # runtime-env agent writes that into its log; this actor finds the key as wandb does.
            self._remote_logger_class = ray.remote(num_cpus=0, max_restarts=0, **_force_on_current_node())(
                TrialRunActor
            )
        if trial in self._trial_logging_futures:
            return  # a restarted trial keeps logging into the run it has
        self._sent[trial.trial_id] = 0
        self._start_logging_actor(trial, [], **self.plan.init_kwargs(trial.trial_id, public_config(trial.config)))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial.trial_id in self._given_up:
            return
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        seq = self._sent[trial.trial_id]
        self._sent[trial.trial_id] = seq + 1
        self._send(trial, _QueueItem.RESULT, {"seq": seq, "metrics": epoch_record(result)})

    def log_trial_save(self, trial: Any) -> None:
        pass  # checkpoints stay in the experiment folder; W&B gets metrics only

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial in self._trial_queues:
            self._ended.add(trial.trial_id)
            summary = {"status": trial_status(trial.last_result, failed)}
            self._send(trial, _QueueItem.END, {"results": self._sent.get(trial.trial_id, 0), "summary": summary})
        self._cleanup_logging_actors()

    def _send(self, trial: Any, kind: Any, payload: dict) -> None:
        # Fire and forget: Ray's blocking put waits for the queue actor to start (seconds on a
        # busy node) inside Tune's event loop, which would hold every trial's results. The queue
        # is an async actor, so items may arrive out of order: results carry sequence numbers.
        try:
            self._trial_queues[trial].actor.put_nowait.remote((kind, payload))
        except Exception as err:  # a dead queue actor loses W&B data, never the trial
            log.warning("W&B logging for trial %s stopped: %s", trial.trial_id, err)
            self._given_up.add(trial.trial_id)

    def _cleanup_logging_actors(self, timeout: int = 0, kill_on_timeout: bool = False) -> None:
        futures = list(self._trial_logging_futures.values())
        done, remaining = ray.wait(futures, num_returns=len(futures), timeout=timeout)
        for future in done:
            trial = self._logging_future_to_trial.pop(future)
            try:
                ray.get(future)
            except Exception as err:  # the logging actor crashed: stop feeding it; the trial runs on
                log.warning("W&B logging for trial %s failed: %s", trial.trial_id, str(err).strip().splitlines()[-1])
            if trial.trial_id not in self._ended:  # crashed, or wandb.init failed: do not start another
                self._given_up.add(trial.trial_id)
            self._ended.discard(trial.trial_id)  # a retried trial logs again
            self._cleanup_logging_actor(trial)
        for future in remaining if kill_on_timeout else []:
            trial = self._logging_future_to_trial.pop(future)
            log.warning(
                "W&B run of trial %s did not finish uploading within %ss; its local files stay for wandb sync",
                trial.trial_id,
                self._upload_timeout,
            )
            self._cleanup_logging_actor(trial)

    def __del__(self) -> None:
        try:
            super().__del__()
        except Exception:  # at interpreter exit Ray's module globals are already gone
            pass


class TrialRunActor(_WandbLoggingActor):
    """One trial's W&B run, fed by the callback through a Ray queue (see ``TrialRunsCallback``)."""

    def run(self) -> None:
        run = init_with_fallback(self._wandb, self.kwargs)
        if run is None:
            return  # wandb.init failed online and offline: nothing to log into; the trial is unaffected
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")  # charts over epochs, whatever Ray's iteration count
        pending: dict[int, dict] = {}
        logged, expected, summary = 0, None, {}
        while expected is None or logged < expected:
            try:
                kind, payload = self.queue.get(timeout=None if expected is None else END_GRACE_S)
            except Empty:
                log.warning("W&B run %s: %d of %d results never arrived", self.kwargs.get("id"), logged, expected)
                break
            if kind == _QueueItem.END:
                payload = payload or {}  # Ray's own stop signal (on garbage collection) carries nothing
                expected, summary = payload.get("results", logged + len(pending)), payload.get("summary", {})
            elif kind == _QueueItem.RESULT:
                pending[payload["seq"]] = payload["metrics"]
            while logged in pending:  # log in the order the trial reported
                self._log(run, pending.pop(logged))
                logged += 1
        run.summary.update(summary)
        run.finish(exit_code=1 if summary.get("status") == "error" else 0)
        # finish() returns once the run's last record is handled, not written: the callback kills
        # this actor as soon as run() returns, so wait here for wandb's service to flush and exit.
        self._wandb.teardown()

    @staticmethod
    def _log(run: Any, metrics: dict) -> None:
        try:
            run.log(metrics)
        except Exception as err:  # a lost point is not worth a lost run
            log.warning("W&B log failed: %s", err)

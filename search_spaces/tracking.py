"""Experiment tracking: the callbacks the Tuner gets (one W&B run per trial), test results into
the runs afterwards, and W&B logging for ``--single-trial`` (what a W&B sweep agent runs).

    python tune.py --space quickstart --wandb tunelab                   # offline unless a key is configured
    python tune.py --space quickstart --wandb tunelab --wandb-mode online
    wandb sync results/<experiment>/wandb/offline-run-*                 # upload offline runs later
    python tune.py --space quickstart --export-wandb-sweep sweep.yaml   # then: wandb sweep sweep.yaml
    tensorboard --logdir results/<experiment>                           # Ray's per-trial event files

W&B runs are written by Ray's ``WandbLoggerCallback`` (a logging actor per trial
on the driver's node), so training code never imports wandb and a W&B failure
can never fail a trial: the worst it does is lose W&B data, while the results
store stays the record of truth. Each trial is one run: id and name = the
trial id, ``group`` = the experiment, ``job_type`` = the preset, tags = model,
data set and searcher, config = the trial's complete flat config, history = the
per-epoch metrics under the results store's names, summary = final status and,
after the search, the test results of the top-k trials.

Offline first: without an API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry for
the W&B host) runs are written offline and the summary prints the ``wandb sync``
command. Online runs fall back to offline when the server cannot be reached: there
is never a login prompt, and the network can hold a search for at most
``PROBE_TIMEOUT_S`` at its start, ``UPLOAD_TIMEOUT_S`` at its end and ``PROBE_TIMEOUT_S`` +
``INIT_TIMEOUT_S`` while the test results are added; trials never wait on it.
The sweep export is ``search_spaces/wandb_sweep.py``.
"""

from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from analysis.results import EPOCH_METRICS
from search_spaces.schema import Preset

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
INIT_TIMEOUT_S = 20.0  # one online wandb.init attempt; then the run is written offline instead
PROBE_TIMEOUT_S = 5.0  # the driver's reachability check of the W&B server before an online search
UPLOAD_TIMEOUT_S = 120.0  # how long the end of a search waits for online runs to finish uploading

# What a trial run logs each epoch: the results store's per-epoch names, plus the model's size.
EPOCH_KEYS = ("epoch", *EPOCH_METRICS, "model/params", "model/flops")
# Config keys that could carry a credential never reach W&B, whatever a preset puts in them.
SECRET_MARKERS = ("api_key", "apikey", "token", "password", "secret", "credential")


# ------------------------------------------------------------------- W&B settings


@dataclass(frozen=True)
class WandbPlan:
    """How this process logs to W&B: resolved once from flags, preset and environment."""

    project: str | None
    entity: str | None
    mode: str  # "online" or "offline"
    why: str  # the reason for the mode, shown in the summary
    job_type: str
    group: str | None = None
    tags: tuple[str, ...] = ()
    root: Path | None = None  # the folder that gets a wandb/ folder; None: WANDB_DIR or the working directory

    def init_kwargs(self, run_id: str | None, config: dict[str, Any], mode: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``wandb.init`` (settings as a dict, so they travel to Ray actors)."""
        kwargs: dict[str, Any] = {
            "project": self.project,
            "entity": self.entity,
            "group": self.group,
            "job_type": self.job_type,
            "tags": list(self.tags),
            "config": config,
            "mode": mode or self.mode,
            "resume": "allow",
            "settings": {
                "base_url": base_url(),  # explicit: Ray actors may not share the driver's environment
                "init_timeout": INIT_TIMEOUT_S,
                "silent": True,
                "console": "off",
                "save_code": False,
            },
        }
        if run_id:
            kwargs.update(id=run_id, name=run_id)
        if self.root is not None:
            kwargs["dir"] = str(self.root)
        return {k: v for k, v in kwargs.items() if v is not None}


def wandb_plan(preset: Preset, args: Any, root: Path | None = None) -> WandbPlan | None:
    """The W&B plan for this command, or None when W&B is off.

    W&B is on with ``--wandb PROJECT``, a preset's ``logging.wandb.project``, or when a W&B
    sweep agent runs the command (``WANDB_SWEEP_ID``). The mode is the first of
    ``--wandb-mode``, the preset's ``logging.wandb.mode``, ``WANDB_MODE``, and "online when an
    API key is configured, else offline"; online without a key is offline (no login prompt).
    """
    cfg = preset.logging.wandb
    project = getattr(args, "wandb", None) or cfg.project
    in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
    if not project and not in_sweep:
        return None
    mode, why = _resolve_mode(getattr(args, "wandb_mode", None) or "auto", cfg.mode)
    if mode == "disabled":
        return None
    tags = tuple(dict.fromkeys((*cfg.tags, preset.base.model.name, preset.base.data.name)))
    if root is not None and os.environ.get("WANDB_DIR"):
        root = Path(os.environ["WANDB_DIR"]).expanduser().resolve()  # the user's W&B convention wins
    return WandbPlan(project=project, entity=cfg.entity, mode=mode, why=why, job_type=preset.name, tags=tags, root=root)


def _resolve_mode(flag: str, preset_mode: str) -> tuple[str, str]:
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    env = {"dryrun": "offline", "run": "online"}.get(env, env)  # wandb's older spellings
    for requested, source in ((flag, "--wandb-mode"), (preset_mode, "logging.wandb.mode"), (env, "WANDB_MODE")):
        if requested in ("online", "offline", "disabled"):
            if requested == "online" and not api_key_configured():
                log.warning("W&B mode online (%s) but no API key is configured; writing runs offline", source)
                return "offline", "online was asked for but no API key is configured"
            return requested, f"{source}={requested}"
    if api_key_configured():
        return "online", "an API key is configured"
    return "offline", "no W&B API key is configured (WANDB_API_KEY or ~/.netrc)"


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def api_key_configured() -> bool:
    """Whether W&B would find a key: ``WANDB_API_KEY`` or a netrc entry for the W&B host (never read out)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(base_url()).hostname or ""
    path = os.environ.get("NETRC") or None
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def server_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the W&B server answers HTTP at all (any status counts); sends no credentials."""
    try:
        urllib.request.urlopen(base_url(), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config as W&B stores it: JSON values only, no key that looks like a credential."""
    out = {}
    for key, value in config.items():
        if any(marker in key.lower().replace("-", "_") for marker in SECRET_MARKERS):
            continue
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, (bool, int, float, str, list)):
            out[key] = value
        else:
            out[key] = str(value)  # an object reference would be meaningless in a dashboard
    return out


def epoch_record(result: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch metrics of one Ray result, under the results store's names."""
    return {
        k: result[k] for k in EPOCH_KEYS if isinstance(result.get(k), (int, float)) and not isinstance(result[k], bool)
    }


def trial_status(last_result: dict[str, Any] | None, failed: bool) -> str:
    """The results store's status vocabulary: completed, stopped, diverged, oom, error."""
    if failed:
        return "error"
    status = (last_result or {}).get("status")
    return status if status in ("completed", "diverged", "oom") else "stopped"


# --------------------------------------------------------------- search callbacks


def search_plan(preset: Preset, args: Any, exp_dir: Path) -> WandbPlan | None:
    """The plan for a search's trial runs: grouped by experiment, tagged with the searcher."""
    plan = wandb_plan(preset, args, root=exp_dir)
    if plan is None:
        return None
    return replace(plan, group=exp_dir.name, tags=tuple(dict.fromkeys((*plan.tags, preset.tune.searcher))))


def search_callbacks(preset: Preset, args: Any, exp_dir: Path) -> list[Any]:
    """The Tuner's callbacks: a W&B run per trial when W&B is on (Ray adds CSV, JSON and TensorBoard)."""
    plan = search_plan(preset, args, exp_dir)
    if plan is None:
        return []
    if plan.mode == "online" and not server_reachable():
        log.warning("W&B server %s is unreachable; this search writes its runs offline", base_url())
        plan = replace(plan, mode="offline", why=f"{base_url()} was unreachable when the search started")
    log.info("W&B: project %s, group %s, %s (%s)", plan.project, plan.group, plan.mode, plan.why)
    from search_spaces.wandb_callback import TrialRunsCallback  # imports Ray's W&B integration: only when on

    return [TrialRunsCallback(plan)]


def init_with_fallback(wandb: Any, kwargs: dict[str, Any]) -> Any:
    """``wandb.init``; an online run that cannot start is written offline instead, for ``wandb sync``."""
    kwargs = {**kwargs, "settings": wandb.Settings(**kwargs.get("settings", {}))}
    try:
        return wandb.init(**kwargs)
    except Exception as err:
        if kwargs.get("mode") != "online":
            log.warning("W&B run %s could not start: %s", kwargs.get("id"), str(err).splitlines()[0])
            return None
        log.warning(
            "W&B online run %s could not start (%s); writing it offline", kwargs.get("id"), str(err).splitlines()[0]
        )
    wandb.teardown()  # the failed online attempt still holds the run id in wandb's service
    try:
        return wandb.init(**{**kwargs, "mode": "offline"})
    except Exception as err:
        log.warning("W&B run %s could not start offline either: %s", kwargs.get("id"), str(err).splitlines()[0])
        return None


# ------------------------------------------------------------------- after search


def after_search(preset: Preset, args: Any, exp_dir: Path, final: Any, configs: dict[str, dict]) -> list[str]:
    """Add the top-k trials' test results to their W&B runs' summaries; return lines for the summary.

    ``final`` is tune.py's test table (trial_id, rank, test/acc, test/loss, checkpoint_epoch);
    ``configs`` maps every trial id to its config. The test set is measured after the trial
    runs have finished, so each tested run is resumed by id; offline, that is a second
    fragment of the same run, which ``wandb sync`` (wandb >= 0.23) uploads after the first.
    """
    plan = search_plan(preset, args, exp_dir)
    if plan is None:
        return []
    tested = final[final["kind"] == "top_k"] if "kind" in final else final  # confirm re-runs have no trial run
    tested = tested.dropna(subset=["test/acc"]) if len(tested) else tested
    if plan.mode == "online" and not server_reachable():
        plan = replace(plan, mode="offline", why=f"{base_url()} was unreachable")
    mode = plan.mode
    if len(tested):
        import wandb

        for row in tested.to_dict("records"):
            trial_id = row["trial_id"]
            kwargs = plan.init_kwargs(trial_id, public_config(configs.get(trial_id, {})), mode=mode)
            run = init_with_fallback(wandb, kwargs)
            if run is None:
                continue
            mode = "offline" if run.offline else mode  # one timeout is enough to learn the server is away
            run.summary.update(
                {
                    "test/acc": float(row["test/acc"]),
                    "test/loss": float(row["test/loss"]),
                    "test/rank": int(row["rank"]),
                    "test/checkpoint_epoch": int(row["checkpoint_epoch"]),
                }
            )
            run.finish()
        wandb.teardown()  # stop wandb's service process; the driver has nothing more to log
    return summary_lines(plan, exp_dir, set(configs))


def summary_lines(plan: WandbPlan, exp_dir: Path, trial_ids: set[str]) -> list[str]:
    """Where the runs went and, for offline runs, the ``wandb sync`` command that uploads them."""
    wandb_dir = (plan.root or exp_dir) / "wandb"
    offline = [p for p in sorted(wandb_dir.glob("offline-run-*")) if p.name.rsplit("-", 1)[-1] in trial_ids]
    lines = [f"\nW&B: project {plan.project}, group {plan.group}, job_type {plan.job_type}; {plan.mode} ({plan.why})"]
    if offline:
        runs = len({p.name.rsplit("-", 1)[-1] for p in offline})
        where = f"{wandb_dir}/offline-run-*" if plan.root == exp_dir else " ".join(map(str, offline))
        lines.append(f"  {runs} runs written offline; upload them with:  wandb sync {where}")
    return lines


# ---------------------------------------------------------------- single trial


@dataclass
class SingleTrialRun:
    """W&B logging for ``tune.py --single-trial``, e.g. when a W&B sweep agent runs it."""

    run: Any
    in_sweep: bool = field(default=False)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        try:
            self.run.log(epoch_record(metrics))
        except Exception as err:
            log.warning("W&B log failed: %s", err)

    def finish(self, status: str, test: dict[str, float] | None = None) -> None:
        summary: dict[str, Any] = {"status": status}
        if test and not self.in_sweep:
            # In a sweep, W&B compares runs on the sweep metric; the test split is measured once,
            # for the chosen config, so sweep runs carry validation metrics only.
            summary.update(test)
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if status == "completed" else 1)


def single_trial_run(preset: Preset, args: Any) -> SingleTrialRun | None:
    """A W&B run for one in-process trial, or None when W&B is off (see ``wandb_plan``)."""
    plan = wandb_plan(preset, args)
    if plan is None:
        return None
    import wandb

    in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
    kwargs = plan.init_kwargs(None, public_config(preset.base.to_flat()))
    kwargs["tags"] = [*kwargs["tags"], "wandb-sweep" if in_sweep else "single-trial"]
    run = init_with_fallback(wandb, kwargs)
    if run is None:
        return None
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    return SingleTrialRun(run, in_sweep=in_sweep)

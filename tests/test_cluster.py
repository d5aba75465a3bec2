"""Multi-node Ray for real: a head and two worker nodes on this machine, driven by ``tune.py --address``.

    python -m pytest tests/test_cluster.py -q        # marker `cluster`, about 2-3 minutes on 2 CPUs

The head has no CPUs, so every trial runs on a worker node and its data reaches
it through the object store. One test kills a worker node (SIGKILL to its raylet
and workers) in the middle of a trial and checks that the trial resumes from its
last checkpoint on the other node; the other kills the driver mid-search and
checks that ``tune.py --resume`` finishes the experiment without re-running
finished trials or leaving an Optuna trial RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.results import load_experiment
from tests.conftest import ROOT
from tests.multinode import LocalCluster

pytestmark = pytest.mark.cluster

# Small and slow enough that a kill lands inside a trial: digits epochs take 1-3 s on 2 CPUs.
SEARCH = ["--space", "quickstart", "--quiet", "--set", "tune.top_k_test=1", "--max-concurrent", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), worker_cpus=[1, 1]) as running:
        yield running


def start_driver(cluster: LocalCluster, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "tune.py"), "--address", cluster.address, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster.env,
            cwd=log.parent,
            start_new_session=True,
        )


def wait_driver(driver: subprocess.Popen, log: Path, timeout_s: float) -> None:
    try:
        code = driver.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        pytest.fail(f"tune.py did not finish in {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")
    assert code == 0, log.read_text()[-4000:]


def trial_results(exp_dir: Path) -> dict[str, list[dict]]:
    """Ray's per-trial result.json lines, as written so far (trial folder name = trial id)."""
    out = {}
    for path in sorted(exp_dir.glob("*/result.json")):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
        out[path.parent.name] = rows
    return out


def poll(condition, timeout_s: float, driver: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if driver.poll() is not None:
            pytest.fail(f"tune.py ended before the kill point:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    pytest.fail(f"kill point not reached in {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")


def test_trials_spread_over_nodes_and_survive_losing_one(cluster, tmp_path):
    exp_dir, log = tmp_path / "results" / "nodeloss", tmp_path / "nodeloss.log"
    driver = start_driver(
        cluster,
        log,
        *SEARCH,
        "--storage-path",
        str(exp_dir.parent),
        "--name",
        "nodeloss",
        "--num-samples",
        "3",
        "--max-epochs",
        "6",
        "--scheduler",
        "fifo",
    )
    try:

        def trial_mid_run():  # a trial with a checkpoint behind it and epochs ahead of it, on a worker node
            for trial_id, rows in trial_results(exp_dir).items():
                if rows and 2 <= rows[-1]["epoch"] <= 4:
                    node = cluster.node_of_pid(rows[-1]["pid"])
                    if node is not None and node.name.startswith("worker"):
                        return trial_id, rows[-1]["epoch"], node, rows[-1]["node_id"]
            return None

        victim, epoch_at_kill, node, node_id = poll(trial_mid_run, 120, driver, log)
        node.kill()  # SIGKILL: raylet, object store and the trial's worker process die at once
        wait_driver(driver, log, 150)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)

    exp = load_experiment(exp_dir)
    trials, epochs = exp.trials.set_index("trial_id"), exp.epochs
    assert len(trials) == 3
    assert (trials["status"] == "completed").all(), trials[["status", "error"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).map(lambda e: e == list(range(1, 7))).all()
    # Before the kill the trials ran on two different worker nodes.
    assert epochs["node_id"].nunique() >= 2
    mine = epochs[epochs["trial_id"] == victim].set_index("epoch")["node_id"]
    # Resumed, not restarted: the epochs before the kill keep the dead node, the rest ran elsewhere.
    assert (mine.loc[1 : epoch_at_kill - 1] == node_id).all(), mine
    assert mine.loc[6] != node_id, mine
    # The checkpoint of the last finished epoch was the restart point: no epoch of the dead node after it.
    assert (mine.loc[epoch_at_kill + 1 :] != node_id).all(), mine
    # Ray logged a restore for it (the adapter resumes from the checkpoint, never from epoch 1).
    rows = trial_results(exp_dir)[victim]
    assert [r["epoch"] for r in rows].count(1) == 1, [r["epoch"] for r in rows]


def test_driver_killed_mid_search_resumes_without_rerunning(cluster, tmp_path):
    import optuna

    from search_spaces.optuna_searcher import open_study

    while len(cluster.workers) < 2:  # the previous test may have taken one node down
        cluster.add_worker(1)
    cluster.wait_for_nodes(3)
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp_dir = storage / "crash"
    args = ["--storage-path", str(storage), "--name", "crash"]
    driver = start_driver(
        cluster, log, *SEARCH, *args, "--num-samples", "5", "--max-epochs", "4", "--scheduler", "fifo"
    )
    try:

        def one_done_one_running():
            results = trial_results(exp_dir)
            done = [t for t, rows in results.items() if rows and rows[-1]["status"] == "completed"]
            running = [t for t, rows in results.items() if rows and rows[-1]["status"] == "running"]
            return (done, running) if done and running else None

        poll(one_done_one_running, 150, driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
        driver.wait()
    before = trial_results(exp_dir)
    finished = {t: rows for t, rows in before.items() if rows and rows[-1]["status"] == "completed"}
    assert finished

    resumed = start_driver(cluster, log, *args, "--resume", "--quiet")
    wait_driver(resumed, log, 150)

    exp = load_experiment(exp_dir)
    assert len(exp.trials) == 5 and exp.trials["trial_id"].is_unique
    assert set(exp.trials["status"]) == {"completed"}, exp.trials[["trial_id", "status", "error"]]
    after = trial_results(exp_dir)
    for trial_id, rows in finished.items():  # finished trials were not trained again
        assert after[trial_id][: len(rows)] == rows
        # At most the final result told once more, when the kill came before Ray recorded the trial finished.
        again = after[trial_id][len(rows) :]
        assert len(again) <= 1 and all(
            (r["epoch"], r["val/acc"], r["status"]) == (rows[-1]["epoch"], rows[-1]["val/acc"], "completed")
            for r in again
        ), again
    # Everything reported before the crash is in the results store.
    reported = {(t, r["epoch"]) for t, rows in before.items() for r in rows}
    stored = set(zip(exp.epochs["trial_id"], exp.epochs["epoch"]))
    assert reported <= stored
    assert len(exp.epochs) == 5 * 4 and not exp.epochs.duplicated(["trial_id", "epoch"]).any()
    study = open_study(exp_dir / "optuna.journal", "maximize")
    states = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)])
    assert optuna.trial.TrialState.RUNNING.name not in set(states), states.value_counts()
    assert (states == "COMPLETE").sum() == 5, states.value_counts()


def test_cluster_refuses_a_driver_without_the_token(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    out = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={cluster.address!r})"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert "token" in out.stderr.lower(), out.stderr[-2000:]

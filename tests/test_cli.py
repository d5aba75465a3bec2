"""tune.py's command line: help, --list, and one clear line for each bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tune
from tests.conftest import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tune.py"), *args], capture_output=True, text=True, timeout=300)


def test_help_explains_every_flag():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in (
        "--space",
        "--list",
        "--num-samples",
        "--max-epochs",
        "--searcher",
        "--scheduler",
        "--seed",
        "--data-dir",
        "--storage-path",
        "--name",
        "--address",
        "--cpus-per-trial",
        "--gpus-per-trial",
        "--set",
        "--smoke",
        "--resume",
        "--single-trial",
    ):
        assert flag in out.stdout, flag


def test_list_prints_quickstart_with_budget(capsys):
    assert tune.main(["--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quickstart"))
    assert "digits" in line and "trials" in line


def test_unknown_preset_is_one_clear_line():
    out = run_cli("--space", "nope")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "unknown preset 'nope'" in lines[0] and "quickstart" in lines[0]


def test_negative_learning_rate_is_one_clear_line():
    out = run_cli("--space", "quickstart", "--set", "optimizer.lr=-0.1", "--single-trial")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "base.optimizer.lr" in lines[0] and "> 0" in lines[0] and "-0.1" in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--space", "quickstart", "--num-samples", "zero"], "--num-samples: expected an integer > 0"),
        (["--space", "quickstart", "--searcher", "bayes"], "invalid choice: 'bayes'"),
        (["--space", "quickstart", "--set", "optimizer.lr"], "expected dotted.key=value"),
        (["--space", "quickstart", "--set", "optimiser.lr=0.1"], "base.optimiser: unknown key"),
        (["--space", "quickstart", "--set", "model.name=resnet19"], "closest: "),
        (["--resume"], "--resume needs --name"),
    ],
)
def test_bad_flags_name_the_problem(args, expected):
    out = run_cli(*args)
    assert out.returncode == 2
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_single_trial_trains_and_tests(capsys):
    assert tune.main(["--space", "quickstart", "--single-trial", "--set", "epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "epoch   3" in out
    accuracy = float(out.split("test/acc ")[1].split()[0])
    assert accuracy > 0.8

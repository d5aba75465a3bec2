"""Bad input that no other test file covers: cluster addresses, impossible resources,
experiments that already exist, and the rule that every ``torch.load`` is weights-only.

    python -m pytest tests/test_bad_input.py -q

README.md's "Bad input and failures" table lists every bad input and where it is tested.
"""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import tune
from search_spaces import ConfigError
from tests.conftest import ROOT


def run_cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tune.py"), *args], capture_output=True, text=True, timeout=timeout_s
    )


def closed_port() -> int:
    with socket.socket() as sock:  # bound, then released: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_address_is_one_line_not_a_hang():
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    out = run_cli("--space", "quickstart", "--address", address, "--num-samples", "1", timeout_s=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"tune.py: error: cannot reach a Ray cluster at --address {address}")
    assert "ray start --head" in lines[0]
    assert time.monotonic() - start < 90  # ray.init alone retries for minutes; the check answers in seconds


def test_closed_port_is_refused_in_seconds():
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach a Ray cluster at --address {address}"):
        tune.check_address(address, timeout_s=1.0)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("address", ["localhost", "10.0.0.5:port", ":6379"])
def test_malformed_address_names_the_expected_form(address):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        tune.check_address(address)


def test_auto_and_no_address_are_left_to_ray():
    tune.check_address(None)
    tune.check_address("auto")


def test_impossible_resources_fail_before_searching(ray_session, tmp_path, capsys):
    code = tune.main(
        ["--space", "quickstart", "--gpus-per-trial", "1", "--storage-path", str(tmp_path), "--name", "gpu", "--quiet"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "tune.resources: each trial needs 1 CPU and 1 GPU but the largest node has" in err[0]
    assert "lower --cpus-per-trial/--gpus-per-trial or add nodes" in err[0]
    assert not (tmp_path / "gpu").exists()  # nothing half-written


def test_existing_experiment_is_never_overwritten(ray_session, tmp_path, capsys):
    exp = tmp_path / "qs"
    exp.mkdir()
    (exp / tune.RUN_FILE).write_text('{"space": "quickstart", "set": []}')
    pd.DataFrame({"trial_id": ["a"], "val/acc_best": [0.9]}).to_parquet(exp / "trials.parquet")
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    code = tune.main(["--space", "quickstart", "--storage-path", str(tmp_path), "--name", "qs", "--num-samples", "1"])
    assert code == 2
    assert "already exists; use --resume or another --name" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before


def test_resume_of_unknown_experiment_names_the_folder(tmp_path):
    out = run_cli("--resume", "--name", "missing", "--storage-path", str(tmp_path))
    assert out.returncode == 2
    assert f"no experiment to resume at {tmp_path / 'missing'}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _source_files():
    for folder in ("trainables", "search_spaces", "analysis", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield ROOT / "tune.py"


def test_every_torch_load_is_weights_only():
    """A pickle inside a checkpoint or weights file runs code when loaded; weights_only=True refuses it."""
    calls = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is looking in the wrong place"
    assert [where for where, safe in calls if not safe] == []
    # Nothing reaches pickle another way either (the CIFAR loader's restricted unpickler is the one user).
    for path in _source_files():
        text = path.read_text()
        assert "pickle.load(" not in text or path.name in ("safe_pickle.py", "optuna_searcher.py"), path

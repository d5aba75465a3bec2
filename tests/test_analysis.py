"""Analysis on real experiments made here (quickstart digits, smoke size): report, explain,
ablation, notebook, and tune.py --confirm."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tune
from analysis import explain, report
from analysis.ablation import ablation_tables
from analysis.importance import importance_table
from analysis.markdown import parse_number, parse_table
from analysis.results import load_experiment, write_results
from analysis.rungs import rung_epochs, rung_table

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "notebooks" / "best_trials.ipynb"
SMALL = ["--smoke", "--max-epochs", "3", "--quiet", "--set", "tune.top_k_test=2"]


def _mlp_preset(folder: Path) -> Path:
    """The quickstart preset with the small CNN swapped for an MLP (same searched optimiser space)."""
    text = (ROOT / "search_spaces" / "quickstart.yaml").read_text()
    text = text.replace("name: small_cnn\n    width: 16\n    dense_width: 64", "name: mlp\n    width: 64")
    text = text.replace("model.width: {choice: [8, 16, 32]}", "model.width: {choice: [32, 64, 128]}")
    path = folder / "digits_mlp.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def experiments(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("analysis-results")
    assert (
        tune.main(
            [
                "--space",
                "quickstart",
                "--storage-path",
                str(storage),
                "--name",
                "cnn",
                *SMALL,
                "--num-samples",
                "4",
                "--confirm",
                "2",
            ]
        )
        == 0
    )  # four trials: the fewest importance analysis accepts
    mlp = _mlp_preset(storage)
    assert (
        tune.main(["--space", str(mlp), "--storage-path", str(storage), "--name", "mlp", *SMALL, "--num-samples", "3"])
        == 0
    )
    return load_experiment(storage / "cnn"), load_experiment(storage / "mlp")


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 3)
    return text[start : end if end > 0 else None]


def _first_table(section: str) -> pd.DataFrame:
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return parse_table("\n".join(lines[start:end]))


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_report_writes_valid_plots(experiments, tmp_path, capsys):
    from PIL import Image

    cnn, _ = experiments
    assert report.main([str(cnn.path), "--out", str(tmp_path)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "report.md"
    text = path.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"learning_curves.png", "metric_vs_params.png", "parallel_coordinates.png", "rungs.png"} <= set(images)
    for name in images:
        with Image.open(tmp_path / name) as image:
            image.verify()  # raises on a truncated or non-PNG file
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    for heading in (
        "Leaderboard",
        "Test results",
        "Learning curves",
        "Hyperparameter importance",
        "Scheduler: what each rung kept",
        "Failed trials",
    ):
        assert f"## {heading}" in text


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_report_leaderboard_numbers_match_parquet(experiments, tmp_path):
    cnn, _ = experiments
    text = report.build_report(cnn, tmp_path).read_text()
    board = _first_table(_section(text, "Leaderboard"))
    trials = cnn.trials.set_index("trial_id")
    expected_order = cnn.trials.sort_values("val/acc_best", ascending=False)["trial_id"].tolist()
    assert board["trial_id"].tolist() == expected_order[: len(board)]
    checked = 0
    for _, row in board.iterrows():
        truth = trials.loc[row["trial_id"]]
        for column in board.columns:
            source = {"params": "model/params"}.get(column, column if column in truth else f"config.{column}")
            if column in ("rank", "trial_id") or source not in truth or isinstance(truth[source], str):
                continue
            shown, actual = parse_number(row[column]), float(truth[source])
            if np.isnan(actual):
                assert np.isnan(shown), (row["trial_id"], column)
            else:
                assert shown == pytest.approx(actual, rel=1e-3, abs=5e-5), (row["trial_id"], column)
            checked += 1
    assert checked >= len(board) * 6
    tested = _first_table(_section(text, "Test results"))
    final = cnn.final[cnn.final["kind"] == "top_k"].set_index("trial_id")
    assert set(tested["trial_id"]) == set(final.index)
    for _, row in tested.iterrows():
        assert parse_number(row["test/acc"]) == pytest.approx(final.loc[row["trial_id"], "test/acc"], abs=5e-5)


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_importance_and_rungs_from_the_store(experiments):
    cnn, _ = experiments
    importance = importance_table(cnn)
    assert len(importance) >= 3  # categorical (optimizer.name, batch_size) and continuous parameters alike
    assert set(importance["parameter"]) <= set(cnn.meta["searched"])
    assert importance["fanova"].sum() == pytest.approx(1.0, abs=1e-6)
    assert rung_epochs(2, 3, 12) == [2, 6] and rung_epochs(1, 3, 3) == [1] and rung_epochs(1, 2, 8) == [1, 2, 4]
    rungs = rung_table(cnn)
    assert rungs["reached"].iloc[0] == len(cnn.trials)
    assert rungs["stopped_here"].sum() == (cnn.trials["status"] == "stopped").sum()


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_confirm_rows_have_distinct_seeds_and_full_epochs(experiments):
    cnn, _ = experiments
    confirm = cnn.final[cnn.final["kind"] == "confirm"]
    best = cnn.leaderboard(1)["trial_id"].iloc[0]
    assert len(confirm) == 2
    assert confirm["seed"].is_unique and int(cnn.trials["config.seed"].iloc[0]) not in set(confirm["seed"])
    assert (confirm["source_trial_id"] == best).all()
    assert (confirm["epochs_run"] == cnn.meta["tune"]["max_epochs"]).all()  # FIFO: nothing stopped early
    assert confirm["test/acc"].between(0.0, 1.0).all()
    assert (cnn.path / "cnn-confirm").is_dir()
    summary = report.confirm_summary(cnn)
    assert summary["test/acc mean"].iloc[0] == pytest.approx(confirm["test/acc"].mean())
    assert summary["seeds"].iloc[0] == 2


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_explain_two_experiments(experiments, tmp_path, capsys):
    cnn, mlp = experiments
    out = tmp_path / "gap.md"
    assert explain.main([str(cnn.path), str(mlp.path), "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    for heading in (
        "Best vs best",
        "The same hyperparameters on both",
        "Sensitivity to hyperparameters",
        "Train–validation gap",
        "Epochs to reach a threshold",
        "Did early stopping cull the slower starter?",
        "Parameters and FLOPs",
        "Conclusion",
    ):
        assert f"## {heading}" in text, heading
    assert "No confirm runs for mlp" in text  # only the CNN was confirmed
    sizes = _first_table(_section(text, "Parameters and FLOPs")).set_index("experiment")
    for exp in (cnn, mlp):
        best = exp.leaderboard(1).iloc[0]
        assert parse_number(sizes.loc[exp.name, "params (best)"]) == best["model/params"]
        assert parse_number(sizes.loc[exp.name, "FLOPs/image (best)"]) == best["model/flops"]
    claims = [line for line in _section(text, "Conclusion").splitlines() if line.startswith("- ")]
    assert len(claims) >= 6
    assert all(re.search(r"\d\.\d{4}|\d,\d{3}", claim) for claim in claims), claims  # every claim cites a number


def _synthetic_ablation(folder: Path, seeds: int, noise: float, seed: int = 1):
    """S0-like grid: pretrained × stem × optimizer, with a planted main effect (sgd +0.05) and a
    planted interaction (pretrained weights with the ImageNet stem: −0.40)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pretrained, stem, optimizer, s in itertools.product(
        [True, False], ["imagenet", "cifar"], ["adam", "sgd"], range(seeds)
    ):
        value = 0.95 + (0.05 if optimizer == "sgd" else 0.0) - (0.40 if pretrained and stem == "imagenet" else 0.0)
        rows.append(
            {
                "trial_id": f"t{len(rows):03d}",
                "status": "completed",
                "epochs_run": 2,
                "val/acc_best": value + rng.normal(0.0, noise),
                "config.model.pretrained": pretrained,
                "config.model.stem": stem,
                "config.optimizer.name": optimizer,
                "config.seed": s,
            }
        )
    meta = {
        "name": "s0-ablation",
        "tune": {"metric": "val/acc", "mode": "max"},
        "searched": ["model.pretrained", "model.stem", "optimizer.name", "seed"],
        "space": {
            "model.pretrained": {"grid": [True, False]},
            "model.stem": {"grid": ["imagenet", "cifar"]},
            "optimizer.name": {"grid": ["adam", "sgd"]},
            "seed": {"grid": list(range(seeds))},
        },
    }
    write_results(folder, pd.DataFrame(rows), pd.DataFrame({"trial_id": [], "epoch": []}), meta)
    return load_experiment(folder)


@pytest.mark.parametrize("seeds", [4, 1])
def test_ablation_recovers_planted_effect_and_interaction(tmp_path, seeds):
    exp = _synthetic_ablation(tmp_path / "abl", seeds=seeds, noise=0.01)
    tables = ablation_tables(exp)
    main = tables["main"].set_index("factor")
    sgd = main.loc["optimizer.name"]
    assert sgd["effect"] == pytest.approx(0.05, abs=0.02) and sgd["ci95 low"] > 0
    # Averaged over the stem, pretrained weights cost half the planted interaction.
    assert main.loc["model.pretrained", "effect"] == pytest.approx(0.20, abs=0.02)
    inter = tables["interactions"].set_index(["factor A", "factor B"])
    planted = inter.loc[("model.pretrained", "model.stem")]
    assert planted["interaction"] == pytest.approx(-0.40, abs=0.03) and planted["ci95 high"] < 0
    assert planted["ci95 low"] <= -0.40 + 0.03
    absent = inter.loc[("model.pretrained", "optimizer.name")]
    assert abs(absent["interaction"]) < 0.03
    if seeds > 1:  # repeated seeds: the pooled seed-to-seed variance gives a tight interval
        assert absent["ci95 high"] - absent["ci95 low"] < 0.05
    assert tables["interactions"].iloc[0]["factor B"] == "model.stem"  # the planted one ranks first


def test_ablation_cli(tmp_path, capsys):
    exp = _synthetic_ablation(tmp_path / "abl", seeds=3, noise=0.01)
    assert explain.main(["--ablation", str(exp.path)]) == 0
    text = (exp.path / "ablation.md").read_text()
    assert "## Main effects" in text and "## Two-way interactions" in text
    assert "model.pretrained (false vs true) × model.stem (cifar vs imagenet) interact" in text
    assert explain.main(["--ablation", str(exp.path), "--metric", "test/nope"]) == 2
    assert "outcome column 'test/nope' is not in trials.parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one folder without --ablation: argparse's usage error
        explain.main([str(exp.path)])


def test_explain_missing_store_is_one_line(tmp_path, capsys):
    assert explain.main([str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing trials.parquet" in err and "Traceback" not in err


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_notebook_executes(experiments, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in committed.cells if cell.cell_type == "code")  # stripped
    cnn, _ = experiments
    monkeypatch.setenv("TUNELAB_EXPERIMENT", str(cnn.path))
    monkeypatch.setenv("TUNELAB_NOTEBOOK_OUT", str(tmp_path))
    NotebookClient(
        committed, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in committed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert cnn.leaderboard(1)["trial_id"].iloc[0] in text
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000


@pytest.mark.slow  # shares the two searches of the `experiments` fixture
def test_report_sets_the_seed_studys_numbers_beside_ours(experiments, tmp_path):
    import dataclasses

    cnn, _ = experiments
    meta = {**cnn.meta, "reference": {"study": "S4", "reported": {"test_acc": 0.7411, "params": 1250858, "epochs": 25}}}
    text = report.build_report(dataclasses.replace(cnn, meta=meta), tmp_path).read_text()
    rows = _first_table(_section(text, "Seed study S4: reported vs ours")).set_index("quantity")
    assert rows.loc["test_acc", "reported"] == "0.7411" and rows.loc["params", "reported"] == "1,250,858"
    confirm = cnn.final[cnn.final["kind"] == "confirm"]["test/acc"].mean()
    assert parse_number(rows.loc["test_acc", "ours"]) == pytest.approx(confirm, abs=5e-5)
    assert parse_number(rows.loc["params", "ours"]) == cnn.leaderboard(1)["model/params"].iloc[0]
    assert rows.loc["epochs", "ours measured as"] == "not measured by this platform"

"""Every benchmark in smoke mode: it runs, prints its table, and writes JSON with sane, positive ratios."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import gpu_throughput, harness_overhead, input_pipeline, search_efficiency


def _read(path) -> dict:
    return json.loads(path.read_text())


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_input_pipeline_smoke(tmp_path, capsys):
    out = tmp_path / "input_pipeline.json"
    assert input_pipeline.main(["--smoke", "--json", str(out)]) == 0
    assert "tunelab BatchPipeline" in capsys.readouterr().out
    result = _read(out)
    methods = {row["method"] for row in result["rows"]}
    assert methods == {input_pipeline.TUNELAB, input_pipeline.BASELINE}
    assert {row["workers"] for row in result["rows"] if row["method"] == input_pipeline.BASELINE} == {0, 1}
    assert all(_positive(row["images_per_s"]) and _positive(row["ratio_vs_best_baseline"]) for row in result["rows"])
    assert _positive(result["speedup"])
    assert result["num_images"] == 1024 and result["machine"]["cpu_count"] >= 1


def test_tunelab_epoch_covers_every_image_once():
    images, labels = input_pipeline.make_data(300)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    assert input_pipeline.tunelab_epoch_s(x, y, batch_size=128, seed=0) > 0
    loader = input_pipeline.torchvision_loader(images, labels, 128, 0, torch.device("cpu"))
    batch, targets = next(iter(loader))
    assert batch.shape == (128, 3, 32, 32) and batch.dtype == torch.float32 and len(targets) == 128


@pytest.mark.slow
def test_harness_overhead_smoke(ray_session, tmp_path, capsys):
    out = tmp_path / "harness.json"
    assert harness_overhead.main(["--smoke", "--json", str(out)]) == 0
    assert "ratio" in capsys.readouterr().out
    result = _read(out)
    assert [row["measure"] for row in result["rows"]] == ["train", "loop", "total"]
    for key in ("ratio_train", "ratio_loop", "ratio_total"):
        assert _positive(result[key]), key
    assert len(result["bare_epoch_s"]) == len(result["tune_epoch_s"]) == result["epochs"] == 2
    assert _positive(result["trial_data_copy_s"]["this_data"]) and _positive(result["trial_data_copy_s"]["cifar10_45k"])
    assert ray_session.is_initialized()  # a shared Ray session is used, never shut down by the benchmark


@pytest.mark.slow
def test_search_efficiency_smoke(ray_session, tmp_path, capsys):
    out = tmp_path / "search.json"
    argv = ["--smoke", "--num-samples", "2", "--max-epochs", "2", "--json", str(out)]
    assert search_efficiency.main(argv) == 0
    assert "epochs_to_target_median" in capsys.readouterr().out
    (case,) = _read(out)["cases"]
    rows = {row["strategy"]: row for row in case["rows"]}
    assert set(rows) == {"tpe+asha", "random+fifo", "tpe+fifo"}
    baseline = rows["random+fifo"]
    assert baseline["ratio_vs_random_to_target"] == 1.0 and baseline["seeds_reaching_target"] == 1
    assert baseline["epochs_used_median"] == 4  # FIFO runs every trial to the end: 2 trials x 2 epochs
    for row in rows.values():
        # A strategy that never reaches the target has no ratio (null), never zero or negative.
        assert row["ratio_vs_random_to_target"] is None or _positive(row["ratio_vs_random_to_target"])
        assert 0 < row["final_best_median"] <= 1 and 2 <= row["epochs_used_median"] <= 4
    for curves in case["curves"].values():
        for curve in curves.values():
            used = [point[0] for point in curve]
            best = [point[1] for point in curve]
            assert used == list(range(1, len(used) + 1)) and best == sorted(best)


def test_search_curve_counts_epochs_in_trial_order(tmp_path):
    import pandas as pd

    from analysis.results import write_results

    trials = pd.DataFrame({"trial_id": ["t_00001", "t_00000"], "val/acc_best": [0.9, 0.5], "status": ["completed"] * 2})
    epochs = pd.DataFrame(
        {
            "trial_id": ["t_00001", "t_00001", "t_00000"],
            "epoch": [1, 2, 1],
            "val/acc": [0.7, 0.9, 0.5],
            "status": ["running", "completed", "running"],
        }
    )
    write_results(tmp_path, trials, epochs, {"name": "x"})
    curve = search_efficiency.best_so_far_curve(tmp_path)
    assert curve == [(1, 0.5), (2, 0.7), (3, 0.9)]  # t_00000 was created first
    assert search_efficiency.epochs_to_reach(curve, 0.7) == 2
    assert search_efficiency.epochs_to_reach(curve, 0.95) == math.inf


def test_gpu_throughput_without_cuda_is_skipped(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the skip path does not apply")
    out = tmp_path / "gpu.json"
    assert gpu_throughput.main(["--smoke", "--json", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert _read(out)["skipped"] is True


def test_peak_table_matches_device_names():
    assert gpu_throughput.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_throughput.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_throughput.peak_flops("NVIDIA H200") == 989e12
    assert gpu_throughput.peak_flops("Some Unknown GPU") is None


@pytest.mark.gpu
def test_gpu_throughput_smoke(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "gpu.json"
    assert gpu_throughput.main(["--smoke", "--json", str(out)]) == 0
    result = _read(out)
    assert all(_positive(row["images_per_s"]) for row in result["rows"])
    assert all(_positive(row["ratio_vs_one_trial"]) for row in result["packing"])
    assert result["memory_isolation"]["isolated"] is True

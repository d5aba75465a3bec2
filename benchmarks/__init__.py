"""Speed and search-efficiency benchmarks; results and the commands that made them are in README.md.

    python -m benchmarks.input_pipeline      [--smoke] [--json FILE]
    python -m benchmarks.harness_overhead    [--smoke] [--json FILE]
    python -m benchmarks.search_efficiency   [--smoke] [--json FILE] [--data-dir ../shared/data]
    python -m benchmarks.gpu_throughput      [--smoke] [--json FILE]   # skipped without CUDA

tests/test_benchmarks.py runs each of them in smoke mode.
"""

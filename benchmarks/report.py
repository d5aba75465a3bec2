"""How every benchmark presents its results: a plain-text table, a JSON file, the machine it ran on.

    from benchmarks.report import print_table, write_json, machine
    print_table(rows, ["method", "images_per_s", "ratio"])
    write_json(path, {"benchmark": "input_pipeline", "machine": machine(), "rows": rows})

Non-finite floats (a target never reached) are written as JSON null.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The hardware and software a figure was measured on (recorded in every JSON file)."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(load, 2),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows) for c in columns]
    lines += [
        "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric, strict=True))
        for r in cells
    ]
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str = "") -> None:
    if title:
        print(f"\n== {title} ==")
    print(format_table(rows, columns), flush=True)


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` (non-finite floats become null, so the file is strict JSON)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2, sort_keys=True) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

"""The edge-bench report: JSON Schema validation, headline ratios and peak memory.

`report.schema.json` beside this module is the one definition of the report; `--json` output
and every file `edge-bench compare` reads are validated against it (a saved edge-bench/1 report
still validates: what versions 2 and 3 added is required of their own reports only).
"""

from __future__ import annotations

import json
import resource
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.edge_bench.timing import ratio
from runtime.contracts.errors import SchemaError

SCHEMA_ID = "edge-bench/3"
#: Reports `compare` reads: this version, edge-bench/2 (no device process) and edge-bench/1 (no headline,
#: no calibration per pipeline).
READABLE_SCHEMAS = ("edge-bench/1", "edge-bench/2", SCHEMA_ID)
SCHEMA_PATH = Path(__file__).resolve().parent / "report.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(report: Any) -> list[str]:
    """Every way `report` breaks the schema, as 'path: message' lines (empty when valid)."""
    errors = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors]


def validate_report(report: Any, source: str = "report") -> None:
    """Raise SchemaError listing every problem when `report` does not match the schema."""
    errors = schema_errors(report)
    if errors:
        raise SchemaError(f"{source}: not a valid edge-bench report ({' or '.join(READABLE_SCHEMAS)}): "
                          + "; ".join(errors[:10]))


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a saved report."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: file does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: not readable JSON ({exc})") from exc
    validate_report(data, source=str(path))
    return data


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far.

    Linux's VmHWM first: it starts afresh at exec, while ru_maxrss starts from the parent's size
    at fork (a benchmark started from a large process would report that process's peak). Else
    ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _find(points: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for point in points:
        if all(point.get(key) == value for key, value in match.items()):
            return point
    return None


def headline_ratios(
    sweep: list[dict[str, Any]], torch_points: list[dict[str, Any]], provider: str, threads: int, input_hw: list[int]
) -> dict[str, Any]:
    """int8/fp32, ORT/PyTorch p50 ratios and efficiencies at one configuration of this run."""
    basis = {"provider": provider, "threads": threads, "input_hw": list(input_hw)}
    fp32 = _find(sweep, variant="fp32", provider=provider, threads=threads, input_hw=list(input_hw))
    int8 = _find(sweep, variant="int8", provider=provider, threads=threads, input_hw=list(input_hw))
    eager = _find(torch_points, threads=threads, input_hw=list(input_hw))

    def p50(point: dict[str, Any] | None) -> float | None:
        return point["latency_ms"]["p50"] if point else None

    return {
        "basis": basis,
        "int8_over_fp32": ratio(p50(int8), p50(fp32)),
        "ort_fp32_over_torch": ratio(p50(fp32), p50(eager)),
        "ort_int8_over_torch": ratio(p50(int8), p50(eager)),
        "efficiency_fp32": fp32["efficiency"] if fp32 else None,
        "efficiency_int8": int8["efficiency"] if int8 else None,
    }

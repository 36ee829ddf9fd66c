"""What machine a report was measured on: CPU, relevant instruction-set flags, ONNX Runtime,
frequency governor, throttling and board model, read from /proc and /sys where they exist.

Without this a latency figure cannot be compared with another machine's: an int8 model is fast
only where the CPU has integer dot-product instructions (x86 VNNI/AMX, ARM asimddp/i8mm).
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Flags that decide how fast fp32 and int8 inference can be.
RELEVANT_FLAGS = (
    # x86
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    # ARM (aarch64 /proc/cpuinfo "Features")
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp",
)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _cpuinfo() -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (keys lower-cased)."""
    info: dict[str, str] = {}
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
    return info


def cpu_model(info: dict[str, str]) -> str:
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = info.get(key)
        if value and not value.isdigit():
            return value
    if info.get("cpu implementer"):
        return f"ARM implementer {info['cpu implementer']} part {info.get('cpu part', '?')}"
    return platform.processor() or platform.machine()


def cpu_flags(info: dict[str, str]) -> list[str]:
    """The relevant flags this CPU reports (x86 'flags' or ARM 'features')."""
    present = set((info.get("flags") or info.get("features") or "").split())
    return [flag for flag in RELEVANT_FLAGS if flag in present]


def board_model() -> str | None:
    """Raspberry Pi / Jetson / other device-tree board name, with the Jetson L4T release if present."""
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    model = model.rstrip("\x00") if model else None
    tegra = _read("/etc/nv_tegra_release")
    if tegra:
        release = tegra.splitlines()[0].lstrip("# ").strip()
        model = f"{model or 'NVIDIA Jetson'} ({release})"
    return model


def frequency() -> dict[str, Any]:
    """Governor and current/max frequency per policy, where cpufreq is exposed."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq"
    governor = _read(f"{base}/scaling_governor")
    cur = _read(f"{base}/scaling_cur_freq")
    high = _read(f"{base}/cpuinfo_max_freq")
    return {
        "governor": governor,
        "cur_mhz": int(cur) / 1000 if cur and cur.isdigit() else None,
        "max_mhz": int(high) / 1000 if high and high.isdigit() else None,
    }


def throttling() -> dict[str, Any]:
    """Temperatures and throttle indicators: Pi `vcgencmd get_throttled`, Intel throttle counters."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        value = _read(f"{zone}/temp")
        kind = _read(f"{zone}/type") or Path(zone).name
        if value and value.lstrip("-").isdigit():
            temps[kind] = int(value) / 1000.0
    result: dict[str, Any] = {"temperatures_c": temps, "throttled": None, "source": None}
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        try:
            out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2).stdout
            result.update(throttled=out.strip().partition("=")[2] or None, source="vcgencmd get_throttled")
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        count = _read("/sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count")
        if count is not None:
            result.update(throttled=count, source="core_throttle_count")
    return result


def memory_total_mb() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024.0
    return None


def onnxruntime_info() -> dict[str, Any]:
    import onnxruntime as ort

    return {"version": ort.__version__, "providers": list(ort.get_available_providers()), "device": ort.get_device()}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Everything above, as the report's `machine` section."""
    import numpy as np

    info = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    flags_text = info.get("flags") or ""
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_model": cpu_model(info),
        "cores_logical": os.cpu_count() or 1,
        "cores_usable": usable,
        "flags": cpu_flags(info),
        "virtualized": "hypervisor" in flags_text.split(),
        "board": board_model(),
        "memory_mb": memory_total_mb(),
        "frequency": frequency(),
        "throttling": throttling(),
        "load_average_start": load_average(),
        "onnxruntime": onnxruntime_info(),
    }

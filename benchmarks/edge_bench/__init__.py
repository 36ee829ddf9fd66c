"""edge-bench: latency, throughput, memory and efficiency of the device pipeline on this machine.

`main` is the console script; the command module imports only click and the standard library at
import time, so `edge-bench --help` is instant on a device.
"""

from benchmarks.edge_bench.cli import main

__all__ = ["main"]

"""Benchmarks: `edge-bench` (the device pipeline on the target hardware) and model latency scripts."""

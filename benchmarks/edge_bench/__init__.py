"""edge-bench: latency, throughput, memory and efficiency of the device pipeline on this machine.

The click group is benchmarks.edge_bench.cli.cli; the console script is smearscope.cli.edge_bench:main.
The command module imports only click and the standard library at import time, so
`edge-bench --help` is instant on a device.
"""

"""`edge-bench`: the console script of benchmarks.edge_bench, with the project's one-line errors."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point: project errors become one line, never a traceback."""
    from benchmarks.edge_bench.cli import cli
    from smearscope.cli.entry import run_console_script

    run_console_script(cli)

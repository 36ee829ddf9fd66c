"""Every command answers --help, and the top level lists the commands."""

from __future__ import annotations

import pytest

from smearscope.cli import SUBCOMMANDS, _module_exists, cli

AVAILABLE = [name for name, target in SUBCOMMANDS.items() if _module_exists(target)]


def test_top_level_help(cli_runner):
    result = cli_runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in AVAILABLE:
        assert name in result.output


@pytest.mark.parametrize("name", AVAILABLE)
def test_each_command_has_help(cli_runner, name):
    result = cli_runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output

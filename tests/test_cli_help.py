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


def test_workstation_command_on_a_device_install_gives_a_hint(tmp_path):
    """A device install has no torch: `smearscope train` must say what to install, not crash."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # what a device install looks like: importing torch fails
        sys.argv = ["smearscope", "train", "segmentation", "--data", "synthetic", "--out", sys.argv[1]]
        from smearscope.cli import main
        main()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs torch" in proc.stderr and "smearscope[train]" in proc.stderr
    assert "Traceback" not in proc.stderr

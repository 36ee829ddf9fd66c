"""Short signatures and no click in library code, checked on the source itself (AST).

- No function of the product packages takes more than 8 parameters (positional, keyword-only
  and `*args`/`**kwargs` names counted, `self`/`cls` not) unless it is a click command, whose
  parameters are its options: related values travel as a dataclass instead.
- Only command-line modules import click: smearscope/cli, and entry modules that define a click
  command and run as programs (`__main__.py`, `cli.py` or an `if __name__ == "__main__"` block).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "server", "training", "export", "benchmarks", "firmware_bridge", "smearscope")
MAX_PARAMETERS = 8
CLICK_DECORATOR = re.compile(r"^(click\.|\w+\.(command|group)\b)")


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(CLICK_DECORATOR.match(ast.unparse(d)) for d in node.decorator_list)


def _parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def _imports_click(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "click" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "click":
            lines.append(node.lineno)
    return lines


def _is_entry_module(path: Path, tree: ast.Module) -> bool:
    defines_command = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_click_command(n)
                          for n in ast.walk(tree))
    runs_as_program = path.name in ("__main__.py", "cli.py") or any(
        isinstance(n, ast.If) and "__name__" in ast.unparse(n.test) and "__main__" in ast.unparse(n.test)
        for n in tree.body)
    return defines_command and runs_as_program


def test_the_packages_are_found():
    modules = _modules()
    assert len(modules) > 100 and any(p.name == "loop.py" for p in modules)


def test_no_function_takes_more_than_eight_parameters():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_click_command(node):
                count = _parameter_count(node)
                if count > MAX_PARAMETERS:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({count} parameters)")
    assert not offenders, "group related parameters in a dataclass:\n" + "\n".join(offenders)


def test_library_code_does_not_import_click():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = _imports_click(tree)
        in_cli = path.relative_to(REPO).parts[:2] == ("smearscope", "cli")  # the command package itself
        if lines and not in_cli and not _is_entry_module(path, tree):
            offenders += [f"{path.relative_to(REPO)}:{line}" for line in lines]
    assert not offenders, "click belongs to command-line modules:\n" + "\n".join(offenders)


@pytest.mark.parametrize(("source", "count", "command"), [
    ("def f(self, a, b, *, c): pass", 3, False),
    ("def f(a, b, c, d, e, f, g, h, i): pass", 9, False),
    ("def f(a, /, b, *args, c, **kw): pass", 5, False),
    ("@click.command()\n@click.option('--a')\ndef f(a, b, c, d, e, f, g, h, i): pass", 9, True),
    ("@train.command('x')\ndef f(): pass", 0, True),
    ("@dataclass\ndef f(): pass", 0, False),
])
def test_the_rules_read_signatures_as_intended(source, count, command):
    node = ast.parse(source).body[0]
    assert _parameter_count(node) == count and _is_click_command(node) == command

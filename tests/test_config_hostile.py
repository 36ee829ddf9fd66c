"""Hostile config files: each one is refused with one error line naming the file, in well under a
second and within bounded memory, by the one loader every config reader uses (device config,
server config, worklists)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.contracts.config import load_config
from runtime.contracts.errors import ConfigError, DataError
from runtime.contracts.safe_load import MAX_CONFIG_BYTES, MAX_EXPANDED_NODES, load_json_file
from runtime.contracts.sample import read_worklist
from server.config import ServerConfig

REPO = Path(__file__).resolve().parent.parent

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _doubling_bomb(levels: int) -> str:
    """Few aliases (two per level, under the alias limit) that still expand to 2**levels values."""
    lines = ["l0: &l0 [x, x]"]
    lines += [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, levels)]
    lines.append(f"camera: {{type: synthetic, seed: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)  # nobody ever writes: opening it for reading the ordinary way would block forever
    return path


def _sparse(tmp_path: Path) -> Path:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(10 * 1024**3)  # 10 GiB of zeros, without using the disk
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (_fifo, r"not a regular file"),
    "dev_zero": (lambda tmp: Path("/dev/zero"), r"^/dev/zero: not a regular file"),
    "folder": (lambda tmp: tmp, r"is a folder"),
    "missing": (lambda tmp: tmp / "nope.yaml", r"nope\.yaml: config file does not exist$"),
    "too_big": (_sparse, rf"more than the limit of {MAX_CONFIG_BYTES}"),
    "binary": (lambda tmp: _write(tmp, "b.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))),
               r"binary content"),
    "latin1": (lambda tmp: _write(tmp, "l.yaml", "device_id: caf\xe9\n".encode("latin-1")), r"not UTF-8 text"),
    "empty": (lambda tmp: _write(tmp, "e.yaml", b""), r"e\.yaml: config file is empty$"),
    "blank": (lambda tmp: _write(tmp, "w.yaml", "  \n\n\t\n"), r"config file is empty$"),
    "comments_only": (lambda tmp: _write(tmp, "c.yaml", "# nothing here\n# yet\n"), r"empty \(only comments\)$"),
    "duplicate_key": (lambda tmp: _write(tmp, "d.yaml", "device_id: a\nmodel: {}\ndevice_id: b\n"),
                      r"line 3: key 'device_id' appears twice$"),
    "duplicate_nested_key": (lambda tmp: _write(tmp, "n.yaml", "camera:\n  type: synthetic\n  seed: 1\n  seed: 2\n"),
                             r"line 4: key 'seed' appears twice$"),
    "billion_laughs": (lambda tmp: _write(tmp, "bomb.yaml", BILLION_LAUGHS), r"more than \d+ aliases"),
    "doubling_bomb": (lambda tmp: _write(tmp, "double.yaml", _doubling_bomb(30)),
                      rf"aliases expand the document beyond {MAX_EXPANDED_NODES} values$"),
    "recursive_alias": (lambda tmp: _write(tmp, "r.yaml", "a: &a [1, *a]\n"), r"refers to its own anchor$"),
    "deep_flow": (lambda tmp: _write(tmp, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n"), r"nested deeper than"),
    "deep_block": (lambda tmp: _write(tmp, "deepb.yaml", "".join(f"{' ' * i}k{i}:\n" for i in range(200)) + " " * 200 + "v\n"),
                   r"nested deeper than"),
    "many_values": (lambda tmp: _write(tmp, "many.yaml", "labs: [" + "1," * 30000 + "1]\n"),
                    rf"more than {MAX_EXPANDED_NODES} values"),
    "python_tag": (lambda tmp: _write(tmp, "tag.yaml", "device_id: !!python/object/apply:os.system [ls]\n"),
                   r"not valid YAML \(line 1, column 12: could not determine a constructor"),
    "syntax": (lambda tmp: _write(tmp, "s.yaml", "camera: [unclosed\n"), r"not valid YAML \(line 2"),
}


def _check(load: Callable[[Path], object], path: Path, message: str) -> str:
    """Refused with one line that names the file; timed on one run, memory traced on a second
    (tracing slows the pure-Python reader several times over). The time is this process's CPU
    time: the bound is on the work the reader does, which other jobs on the machine do not change."""
    started = time.process_time()
    with pytest.raises(ConfigError) as info:
        load(path)
    elapsed = time.process_time() - started
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError):
            load(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    assert text.startswith(str(path)), text
    assert pytest.importorskip("re").search(message, text), text
    assert elapsed < 0.5, f"{elapsed:.2f} s"
    assert peak < 16 * 1024**2, f"{peak / 1024**2:.1f} MiB"
    return text


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_device_config_refuses_hostile_files(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    _check(load_config, make(tmp_path), message)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_server_config_refuses_hostile_files(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    _check(ServerConfig.load, make(tmp_path), message.replace("config file", "server config"))


def test_a_huge_wrong_value_is_not_printed(tmp_path: Path) -> None:
    path = _write(tmp_path, "long.yaml", "model: {threads: " + "x" * 60_000 + "}\n")
    text = _check(load_config, path, r"model\.threads: expected an integer, got str 'xxx")
    assert text.count("x") < 100
    path = _write(tmp_path, "longid.yaml", "device_id: " + "x" * 60_000 + "\n")
    assert _check(load_config, path, r"device_id: at most 4096 characters, got 60000$")


@pytest.mark.parametrize("text", ["#" + "x" * 65_000 + "\na: 1\n", "# comment line\n" * 4_300 + "a: 1\n",
                                  "a: '" + "x" * 65_000 + "'\n", "l: [" + "1," * 30_000 + "1]\n"])
def test_the_largest_files_allowed_are_read_quickly(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "big.yaml", text)
    assert path.stat().st_size <= MAX_CONFIG_BYTES
    started = time.process_time()  # CPU time, as in _check
    with pytest.raises(ConfigError):
        load_config(path)
    assert time.process_time() - started < 0.5


def test_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    _check(load_config, _write(tmp_path, "nan.yaml", "quality: {min_focus: .nan}\n"), r"quality\.min_focus: must be a finite")
    _check(load_config, _write(tmp_path, "inf.yaml", "um_per_px: .inf\n"), r"um_per_px: must be a finite")


def test_shared_anchors_within_the_limits_still_work(tmp_path: Path) -> None:
    """Anchors people use (one block reused a few times) are fine."""
    path = _write(tmp_path, "ok.yaml", "sample: {sample_id: S-1, labs: &labs {fpg_mmol_l: 6.1, age: 52}}\n"
                                       "trigger: {type: interval, seconds: &s 2.5, count: 3}\n"
                                       "camera: {type: opencv, source: 0, reconnect_interval_s: *s}\n")
    config = load_config(path)
    assert config.camera.reconnect_interval_s == 2.5 and config.sample.labs["age"] == 52


def test_worklists_use_the_same_limits(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a regular file"):
        read_worklist(_fifo(tmp_path))
    with pytest.raises(DataError, match=r"key 'labs' appears twice"):
        read_worklist(_write(tmp_path, "w.json", '[{"sample_id": "S", "labs": {}, "labs": {"age": 3}}]'))
    with pytest.raises(DataError, match=r"NaN is not a JSON number"):
        read_worklist(_write(tmp_path, "n.json", '[{"sample_id": "S", "labs": {"age": NaN}}]'))
    with pytest.raises(ConfigError, match=r"nested deeper than"):
        load_json_file(_write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000), max_bytes=1_000_000)


@pytest.mark.parametrize("case", ["billion_laughs", "fifo", "binary", "duplicate_key", "empty"])
def test_config_check_prints_one_line_and_exits_2(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    path = make(tmp_path)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "smearscope", "config", "check", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
    assert time.perf_counter() - started < 30  # the interpreter's start-up; the check itself is measured above


@pytest.mark.parametrize("case", ["billion_laughs", "dev_zero", "duplicate_key"])
def test_serve_refuses_a_hostile_server_config_in_one_line(tmp_path: Path, case: str) -> None:
    make, _ = HOSTILE[case]
    path = make(tmp_path)
    result = subprocess.run([sys.executable, "-m", "smearscope", "serve", "--config", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr

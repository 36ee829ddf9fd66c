"""Reading files people write, with limits checked before any work.

A config, a worklist or a server file may be anything: a FIFO that never ends, /dev/zero, a binary
file, a YAML anchor bomb whose aliases expand to billions of nodes, keys written twice, nesting
deep enough to exhaust the stack. Each is refused with one ConfigError line naming the file, in
bounded time and memory:

- only regular files are opened, and at most `max_bytes` (+1) bytes are read;
- the text must be UTF-8 without NUL bytes, and not empty;
- YAML is composed (not constructed) first: nesting depth, alias count and the size of the
  document with its aliases expanded are bounded before any Python object is built;
- a mapping may not repeat a key.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from runtime.contracts.errors import ConfigError, SmearscopeError

MAX_CONFIG_BYTES = 64 * 1024
"""A hand-written config is a few kilobytes (the commented default example: 6 KiB); 64 KiB leaves room
for long comments and keeps the pure-Python YAML reader under a tenth of a second on any file."""
MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_EXPANDED_NODES = 2_000
"""Values (nodes) in the document, every alias expanded: what a consumer walking the data would see.
A device config has about a hundred; pure-Python YAML composes some 15,000 a second on a small
board, so the limit also bounds the time spent on a hostile file."""


def read_regular_file(path: str | Path, what: str, max_bytes: int,
                      error: type[SmearscopeError] = ConfigError) -> bytes:
    """The bytes of a regular file of at most `max_bytes`: a folder, pipe, socket or device, a
    missing or oversize file is `error` (one line, with the path) before anything is read, and a
    FIFO swapped in after the check cannot block the open."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} does not exist") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file (a device, pipe or socket), expected {what}")
    if info.st_size > max_bytes:
        raise error(f"{path}: {what} is {info.st_size} bytes, more than the limit of {max_bytes}")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since stat, opening it must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise error(f"{path}: not a regular file")
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: {what} is more than the limit of {max_bytes} bytes")
    return raw


def read_text_file(path: str | Path, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a small, regular, UTF-8 file; ConfigError (one line, with the path) otherwise."""
    path = Path(path)
    raw = read_regular_file(path, what, max_bytes)
    if b"\x00" in raw:
        raise ConfigError(f"{path}: binary content, not a text {what}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    if not text.strip():
        raise ConfigError(f"{path}: {what} is empty")
    return text


def load_yaml_file(path: str | Path, what: str = "config file", max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a YAML file people write, within the limits above; comments-only counts as empty."""
    text = read_text_file(path, what, max_bytes)
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: {what} is empty (only comments)")
    return data


def load_json_file(path: str | Path, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a JSON file people write: strict numbers (no NaN/Infinity), no repeated keys, bounded depth."""
    text = read_text_file(path, what, max_bytes)
    return parse_json(text, str(path))


class StrictJsonError(ValueError):
    """JSON that parses but is not plain data: a repeated key, or NaN/Infinity."""


def _no_constants(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise StrictJsonError(f"key {_short(key)} appears twice")
        seen[key] = value
    return seen


def loads_strict_json(text: str) -> Any:
    """`json.loads` refusing repeated keys, NaN/Infinity and numbers that overflow to infinity
    (StrictJsonError, a ValueError), which Python's json accepts but other readers (PostgreSQL,
    browsers) do not."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                      parse_float=_finite_float)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"number {text[:40]} is out of range")
    return value


def parse_json(text: str, where: str) -> Any:
    """Strict JSON from a file people write, nesting bounded before the parser recurses."""
    if _json_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        return loads_strict_json(text)
    except StrictJsonError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _json_depth(text: str) -> int:
    """Bracket depth outside strings: checked before json.loads recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


# --------------------------------------------------------------------------- bounded YAML


class _Limited(Exception):
    """A limit was hit while composing; carries a message without the offending content."""


class _BoundedScanner(Scanner):
    """PyYAML's scanner, refusing deep flow nesting (``[[[[...``) as it reads it: its bookkeeping of
    possible keys grows with the flow level, so thousands of brackets would cost seconds."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _Limited(f"line {self.line + 1}: nested deeper than {MAX_DEPTH} levels")
        super().fetch_flow_collection_start(TokenClass)


class _BoundedComposer(Composer):
    """PyYAML's composer with nesting depth and alias count checked as nodes are composed."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._nodes += 1
        if self._nodes > MAX_EXPANDED_NODES:
            raise _Limited(f"more than {MAX_EXPANDED_NODES} values in one document")
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Limited(f"line {mark.line + 1}: more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Limited(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _StrictConstructor(SafeConstructor):
    """SafeConstructor that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue
                if duplicate:
                    raise _Limited(f"line {key_node.start_mark.line + 1}: key {_short(key)} appears twice")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictConstructor.add_constructor("tag:yaml.org,2002:map", _StrictConstructor.construct_yaml_map)


class _BoundedLoader(Reader, _BoundedScanner, Parser, _BoundedComposer, _StrictConstructor, Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        _BoundedScanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        _StrictConstructor.__init__(self)
        Resolver.__init__(self)


def parse_yaml(text: str, where: str) -> Any:
    """One YAML document, its size with aliases expanded bounded before construction."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    except _Limited as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (yaml.YAMLError, ConstructorError) as exc:
        raise ConfigError(f"{where}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def _check_expanded_size(root: Node) -> None:
    """Count nodes as a consumer would see them, each shared (aliased) node once per use; a cycle is refused."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise _Limited(f"line {node.start_mark.line + 1}: an alias refers to its own anchor")
        in_progress.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise _Limited(f"aliases expand the document beyond {MAX_EXPANDED_NODES} values")
        in_progress.discard(key)
        sizes[key] = total
        return total

    size(root)


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return (where + str(problem)).replace("\n", " ")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

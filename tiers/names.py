"""Names of the tree's nodes: read from a node file (CSV or JSON), kept in the tier's Redis.

A node file lists `code, name` pairs; codes are division codes in any form `normalize_node`
accepts (45, 450000, 450102001). Every gateway of a tier reads the names from the Redis hash
`se:nodes` (code -> name), so a name loaded through one gateway's API is seen by all of them.
A version counter `se:nodes:ver` lets each gateway keep the hash in memory and re-read it only
when it changed.

Names also come up the tree: each child tier's bridge keeps the names of its subtree in the
parent's `se:nodes:below:<child>` (replaced whole on each change; the children are listed in
`se:nodes:children`), so the region shows the villages' names without a file that lists them.
A tier's own names win over those from below: its staff set them. Key names: tiers/contract.py NameKeys.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tiers.contract import NameKeys
from tiers.nodes import NodeCodeError, normalize_node

__all__ = [
    "MAX_NAME_LENGTH", "MAX_NODES", "NodeEntry", "NodeFileError", "NodeNames", "ParsedNodes", "RowError",
    "bundled_node_file", "load_node_file", "parse_nodes",
]

MAX_NAME_LENGTH = 64
MAX_NODES = 1_000_000  # every village of China is about 700,000
_BUNDLED = "guangxi_nodes.csv"


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One named node: its normalised code and its name."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row of a node file was refused; `where` names the line (CSV) or entry (JSON)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedNodes:
    """A node file read row by row: the good entries and an error for each bad row."""

    entries: tuple[NodeEntry, ...]
    errors: tuple[RowError, ...]
    rows: int


class NodeFileError(ValueError):
    """A node file that cannot be used; the message names each bad line."""


def _check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("name must be a string")
    name = value.strip()
    if not name:
        raise ValueError("name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name has {len(name)} characters; at most {MAX_NAME_LENGTH}")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise ValueError("name contains control characters")
    if any(unicodedata.category(c) == "Cs" for c in name):
        # A lone surrogate ("\ud800" in JSON) is no text: Redis could not store it (found fuzzing PUT /nodes/names).
        raise ValueError("name contains a lone surrogate (not Unicode text)")
    return name


def _check_code(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # JSON files often carry codes as numbers
    try:
        return normalize_node(value)
    except NodeCodeError as e:
        raise ValueError(str(e)) from None


# (where, code, name, why it is already known to be bad)
_Row = tuple[str, Any, Any, str | None]


def _collect(rows: list[_Row]) -> ParsedNodes:
    """Validate rows; a code named twice with different names is an error."""
    entries: dict[str, NodeEntry] = {}
    first_seen: dict[str, str] = {}
    errors: list[RowError] = []
    for where, code, name, bad in rows:
        if bad is not None:
            errors.append(RowError(where, bad))
            continue
        try:
            entry = NodeEntry(_check_code(code), _check_name(name))
        except ValueError as e:
            errors.append(RowError(where, str(e)))
            continue
        old = entries.get(entry.code)
        if old is not None and old.name != entry.name:
            errors.append(RowError(where, f"code {entry.code} already named {old.name!r} at {first_seen[entry.code]}"))
            continue
        entries[entry.code] = entry
        first_seen.setdefault(entry.code, where)
    return ParsedNodes(tuple(entries.values()), tuple(errors), len(rows))


def _parse_csv(text: str) -> ParsedNodes:
    if "\x00" in text:
        raise NodeFileError("CSV contains NUL characters; save the sheet as CSV (UTF-8)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[_Row] = []
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise NodeFileError("node file is empty; expected a header line 'code,name'")
        columns = [c.strip().lower() for c in header]
        if "code" not in columns or "name" not in columns:
            raise NodeFileError(f"line {reader.line_num}: header must name the columns code and name "
                                f"(got {', '.join(c[:20] for c in columns[:6])})")
        ci, ni = columns.index("code"), columns.index("name")
        for cells in reader:
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue  # blank lines and comments
            where = f"line {reader.line_num}"
            if len(rows) >= MAX_NODES:
                raise NodeFileError(f"{where}: more than {MAX_NODES} nodes")
            if len(cells) <= max(ci, ni):
                rows.append((where, None, None, f"{len(cells)} cells; the header has code and name in "
                                                f"columns {ci + 1} and {ni + 1}"))
                continue
            rows.append((where, cells[ci], cells[ni], None))
    except csv.Error as e:
        raise NodeFileError(f"line {reader.line_num}: malformed CSV: {e}") from None
    return _collect(rows)


def _parse_json(value: Any) -> ParsedNodes:
    rows: list[_Row] = []
    if isinstance(value, dict):
        if len(value) > MAX_NODES:
            raise NodeFileError(f"more than {MAX_NODES} nodes")
        rows = [(f"key {k[:20]!r}", k, v, None) for k, v in value.items()]
    elif isinstance(value, list):
        if len(value) > MAX_NODES:
            raise NodeFileError(f"more than {MAX_NODES} nodes")
        for i, item in enumerate(value, start=1):
            where = f"entry {i}"
            if not isinstance(item, dict):
                rows.append((where, None, None, 'expected an object {"code": ..., "name": ...}'))
            elif "code" not in item or "name" not in item:
                rows.append((where, None, None, f"missing {'code' if 'code' not in item else 'name'}"))
            else:
                rows.append((where, item["code"], item["name"], None))
    else:
        raise NodeFileError('expected a JSON list of {"code", "name"} objects or an object {code: name}')
    return _collect(rows)


def parse_nodes(data: str | bytes, fmt: str) -> ParsedNodes:
    """Read a node file body ("csv" or "json") row by row; NodeFileError when it cannot be read at all."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise NodeFileError(f"node file is not UTF-8 (byte {e.start})") from None
    else:
        text = data.removeprefix("\ufeff")
    if fmt == "csv":
        return _parse_csv(text)
    if fmt == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise NodeFileError(f"line {e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:
            raise NodeFileError("invalid JSON: nested too deeply") from None
        except ValueError:  # a number of more digits than Python converts (sys.get_int_max_str_digits)
            raise NodeFileError("invalid JSON: a number too long") from None
        return _parse_json(value)
    raise ValueError(f"unknown node file format {fmt!r}; expected csv or json")


def bundled_node_file() -> Path:
    """The node file shipped with the package: Guangxi's region, its cities and some counties."""
    return Path(str(resources.files("tiers") / "data" / _BUNDLED))


def load_node_file(path: Path) -> tuple[NodeEntry, ...]:
    """Every entry of a node file (.csv or .json); NodeFileError naming each bad line otherwise."""
    fmt = "json" if path.suffix.lower() == ".json" else "csv"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NodeFileError(f"cannot read node file {path}: {e.strerror or e}") from None
    try:
        parsed = parse_nodes(data, fmt)
    except NodeFileError as e:
        raise NodeFileError(f"node file {path}: {e}") from None
    if parsed.errors:
        shown = "\n".join(f"  {e}" for e in parsed.errors[:20])
        more = f"\n  ... and {len(parsed.errors) - 20} more" if len(parsed.errors) > 20 else ""
        raise NodeFileError(f"node file {path} has {len(parsed.errors)} bad rows:\n{shown}{more}")
    return parsed.entries


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class NodeNames:
    """Node names in Redis (`se:nodes`), cached per process until another writer bumps the version."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "se") -> None:
        self.redis = redis
        self.keys = NameKeys(prefix)
        self.key = self.keys.names
        self.version_key = self.keys.version
        self.children_key = self.keys.children
        self._cache: dict[str, str] = {}
        self._own: dict[str, str] = {}
        self._version: bytes | None = None

    def below_key(self, child: str) -> str:
        """The hash of the names a child tier forwarded (its whole subtree)."""
        return self.keys.below(child)

    async def put(self, entries: Iterable[NodeEntry], *, replace_under: str | None = None) -> int:
        """Store names in one transaction; with `replace_under`, names below that node not given are dropped.

        Returns how many names were written.
        """
        mapping = {e.code: e.name for e in entries}
        drop: list[str] = []
        if replace_under is not None:
            await self._load(fresh=True)
            drop = [c for c in self._own if c.startswith(replace_under) and c not in mapping]
        async with self.redis.pipeline(transaction=True) as pipe:
            # Large files in slices: one command with a million fields would block Redis for long.
            for i in range(0, len(drop), 10_000):
                pipe.hdel(self.key, *drop[i:i + 10_000])
            items = list(mapping.items())
            for i in range(0, len(items), 10_000):
                pipe.hset(self.key, mapping=dict(items[i:i + 10_000]))
            pipe.incr(self.version_key)
            await pipe.execute()
        return len(mapping)

    async def all(self, *, fresh: bool = False) -> Mapping[str, str]:
        """Every name, this tier's and those forwarded from below, code -> name; re-read only when the version moved."""
        await self._load(fresh=fresh)
        return self._cache

    async def _load(self, *, fresh: bool) -> None:
        version = await self.redis.get(self.version_key)
        if not fresh and version is not None and version == self._version:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key)
            pipe.smembers(self.children_key)
            own_raw, children = await pipe.execute()
        below: dict[str, str] = {}
        if children:
            async with self.redis.pipeline(transaction=False) as pipe:
                for child in sorted(children):
                    pipe.hgetall(self.below_key(child.decode()))
                for raw in await pipe.execute():
                    below.update(_decode(raw))
        self._own = _decode(own_raw)
        self._cache = {**below, **self._own}
        self._version = version

    async def get(self, code: str) -> str | None:
        """The name of one node, or None."""
        return (await self.all()).get(code)

    async def subtree(self, root: str) -> dict[str, str]:
        """Names of `root` and every node below it."""
        return {c: n for c, n in (await self.all()).items() if c.startswith(root)}

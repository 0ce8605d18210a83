"""Per-node figures rolled up over a subtree: camera counts by state, online and intact rates, recent events.

The tree below a root holds every named node of the subtree and every node that has cameras,
with the ancestors that connect them to the root. Each node's figures cover its whole subtree.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from tiers.contract import evcount_key
from tiers.nodes import parent_of, tier_of

__all__ = ["CameraLike", "NodeFigures", "NodeTree", "build_tree", "events_last_hour", "EVCOUNT_WINDOW_MIN"]

EVCOUNT_WINDOW_MIN = 60
_STATES = ("online", "offline", "connecting", "disabled")


class CameraLike(Protocol):
    """What the rollup needs of a camera: where it is, whether it is meant to run, how it is."""

    node: str
    enabled: bool
    state: str
    quality: tuple[str, ...]


@dataclass(slots=True)
class NodeFigures:
    """One node's figures, first its own, then (after build_tree) its whole subtree's."""

    code: str
    name: str | None
    total: int = 0
    enabled: int = 0
    intact: int = 0
    states: collections.Counter = field(default_factory=collections.Counter)
    by_type: collections.Counter = field(default_factory=collections.Counter)
    by_label: collections.Counter = field(default_factory=collections.Counter)
    children: list["NodeFigures"] = field(default_factory=list)

    @property
    def online(self) -> int:
        return self.states["online"]

    @property
    def online_rate(self) -> float | None:
        """在线率: online / enabled; None when no camera is enabled."""
        return round(self.online / self.enabled, 4) if self.enabled else None

    @property
    def intact_rate(self) -> float | None:
        """完好率: online with no quality fault / enabled; None when no camera is enabled."""
        return round(self.intact / self.enabled, 4) if self.enabled else None

    def add(self, other: "NodeFigures") -> None:
        self.total += other.total
        self.enabled += other.enabled
        self.intact += other.intact
        self.states.update(other.states)
        self.by_type.update(other.by_type)
        self.by_label.update(other.by_label)

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """The API's node object; children down to `depth` more levels (all when None)."""
        return {
            "code": self.code,
            "name": self.name,
            "tier": tier_of(self.code).value,
            "cameras": {"total": self.total, "enabled": self.enabled,
                        **{s: self.states[s] for s in _STATES}, "intact": self.intact},
            "online_rate": self.online_rate,
            "intact_rate": self.intact_rate,
            "events_last_hour": {"total": sum(self.by_type.values()),
                                 "by_type": dict(sorted(self.by_type.items())),
                                 "by_label": dict(sorted(self.by_label.items()))},
            "children": [] if depth == 0 else
                        [c.to_dict(None if depth is None else depth - 1) for c in self.children],
        }


@dataclass(frozen=True, slots=True)
class NodeTree:
    """The rolled-up tree below a root, with every node of it by code."""

    root: NodeFigures
    nodes: Mapping[str, NodeFigures]

    def walk(self) -> Iterable[NodeFigures]:
        """Every node, parents before children."""
        stack = [self.root]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))


def _lineage(code: str, root: str) -> Iterable[str]:
    """`code` and its ancestors up to (not including) `root`."""
    c: str | None = code
    while c is not None and len(c) > len(root):
        yield c
        c = parent_of(c)


def build_tree(root: str, names: Mapping[str, str], cameras: Iterable[CameraLike],
               events: Mapping[tuple[str, str, str], int]) -> NodeTree:
    """Roll cameras and event counts (node, type, label) up the tree below `root`."""
    nodes: dict[str, NodeFigures] = {root: NodeFigures(root, names.get(root))}

    def ensure(code: str) -> None:
        for c in _lineage(code, root):
            if c in nodes:
                return
            nodes[c] = NodeFigures(c, names.get(c))

    for code in names:
        if code.startswith(root):
            ensure(code)
    for cam in cameras:
        if not cam.node.startswith(root):
            continue
        ensure(cam.node)
        f = nodes[cam.node]
        f.total += 1
        f.states[cam.state] += 1
        if cam.enabled:
            f.enabled += 1
            if cam.state == "online" and not cam.quality:
                f.intact += 1
    for (node, type_, label), n in events.items():
        if not node.startswith(root) or n <= 0:
            continue
        # Events of a node no longer in the tree (its cameras removed) count at its nearest ancestor in it.
        home = next((c for c in _lineage(node, root) if c in nodes), root)
        f = nodes[home]
        f.by_type[type_] += n
        if label:
            f.by_label[label] += n
    # Deepest first: each node is complete before it is added to its parent.
    for code in sorted(nodes, key=len, reverse=True):
        if code == root:
            continue
        parent = nodes[parent_of(code)]  # type: ignore[index]  # ensure() added every ancestor
        parent.add(nodes[code])
        parent.children.append(nodes[code])
    for f in nodes.values():
        f.children.sort(key=lambda c: c.code)
    return NodeTree(nodes[root], nodes)


async def events_last_hour(redis: aioredis.Redis, root: str, *, prefix: str = "se",
                           now: float | None = None) -> dict[tuple[str, str, str], int]:
    """Event counts of the last 60 minutes below `root`, by (node, type, label), from `se:evcount:<minute>`."""
    minute = int((time.time() if now is None else now) // 60)
    async with redis.pipeline(transaction=False) as pipe:
        for m in range(minute - EVCOUNT_WINDOW_MIN + 1, minute + 1):
            pipe.hgetall(evcount_key(m, prefix))
        hashes = await pipe.execute()
    out: dict[tuple[str, str, str], int] = collections.defaultdict(int)
    for h in hashes:
        for k, v in h.items():
            key = k.decode() if isinstance(k, bytes) else k
            node, _, rest = key.partition("|")
            if not node.startswith(root):
                continue
            type_, _, label = rest.partition("|")
            try:
                out[(node, type_, label)] += int(v)
            except ValueError:
                continue  # not a counter: ignore rather than fail the whole tree
    return dict(out)

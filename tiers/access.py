"""Who may do what where: roles, jurisdictions and the principal behind a request (DESIGN §6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from tiers.nodes import in_subtree


class Role(IntEnum):
    """Roles in increasing power; a higher role may do everything a lower one may."""

    VIEWER = 1  # catalog and status
    OPERATOR = 2  # + events, snapshots, live views
    ADMIN = 3  # + manage cameras and tokens, read the audit trail

    @classmethod
    def parse(cls, value: str) -> "Role":
        """Role from its lower-case name; ValueError naming the choices otherwise."""
        try:
            return cls[value.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"role must be one of {[r.name.lower() for r in cls]}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a token's id and name, its role and its jurisdiction (node code)."""

    token_id: str
    name: str
    role: Role
    node: str

    def covers(self, node: str) -> bool:
        """True when `node` lies in this principal's jurisdiction."""
        return in_subtree(node, self.node)

    def can(self, role: Role) -> bool:
        """True when this principal's role is at least `role`."""
        return self.role >= role

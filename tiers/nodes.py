"""Administrative division codes of the five-tier tree (DESIGN §3)."""

from __future__ import annotations

import re
from enum import Enum

_SIGNIFICANT = {2: "region", 4: "city", 6: "county", 9: "township", 12: "village"}
_PREVIOUS = {4: 2, 6: 4, 9: 6, 12: 9}
_DIGITS = re.compile(r"^[0-9]+$")


class Tier(str, Enum):
    """The five tiers, top to bottom."""

    REGION = "region"
    CITY = "city"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"


class NodeCodeError(ValueError):
    """A node code that is not an administrative division code."""


def normalize_node(code: str) -> str:
    """Return the significant prefix of a division code, accepting the padded national form."""
    if not isinstance(code, str):
        raise NodeCodeError("node code must be a string of digits")
    code = code.strip()
    if not _DIGITS.match(code):
        raise NodeCodeError(f"node code {code[:32]!r} must contain digits only")
    if len(code) in _SIGNIFICANT:
        # Padded national form (450000, 450100, 450102001000): a trailing group of zeros
        # means "this level itself", so drop zero groups until a significant one remains.
        while len(code) > 2:
            cut = _PREVIOUS[len(code)]
            if code[cut:].strip("0"):
                break
            code = code[:cut]
    if len(code) not in _SIGNIFICANT:
        raise NodeCodeError(
            f"node code {code!r} has {len(code)} digits; expected 2, 4, 6, 9 or 12 (or the padded 6/12-digit form)"
        )
    if code[:2] == "00":
        raise NodeCodeError(f"node code {code!r} has no province part")
    return code


def tier_of(code: str) -> Tier:
    """Tier of a normalised node code."""
    return Tier(_SIGNIFICANT[len(code)])


def parent_of(code: str) -> str | None:
    """Parent node code, or None for a region."""
    lengths = sorted(_SIGNIFICANT)
    i = lengths.index(len(code))
    return code[: lengths[i - 1]] if i else None


def in_subtree(code: str, root: str) -> bool:
    """True when `code` is `root` or lies below it."""
    return code.startswith(root)

"""Synthetic names only: brands, companies, places and people are built from syllables, never taken from
a list of real ones, and every brand or company name is checked against a blocklist of real brands.

A generated name that happens to spell a real brand (or contains one as a word) is dropped and the
next candidate is taken, so the output is still deterministic; ``check_synthetic`` is also what the
tests run over every written name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["BlockedNameError", "blocklist", "check_synthetic", "people_names", "place_names", "synthetic_brands"]

_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gl",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "qu",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "th",
    "sh",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "x", "m", "nd", "rk", "sh", "th", "v"]
COMPANY_SUFFIXES = ["Goods Co.", "Brands", "Holdings", "Works", "Trading", "Supply", "Collective", "Labs"]
# category -> (low, high) base price in cents
CATEGORIES = {
    "Grocery": (150, 1200),
    "Produce": (99, 900),
    "Dairy": (149, 1100),
    "Bakery": (199, 1500),
    "Household": (299, 4500),
    "Personal Care": (249, 3500),
    "Electronics": (1999, 49999),
    "Apparel": (999, 12999),
    "Home": (799, 19999),
    "Toys": (599, 7999),
}


class BlockedNameError(ValueError):
    """A generated or configured name matches a real brand."""


@lru_cache(maxsize=1)
def blocklist() -> frozenset[str]:
    text = (Path(__file__).with_name("blocklist.txt")).read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _blocked(name: str) -> str | None:
    low = name.lower()
    words = re.findall(r"[a-z0-9&']+", low)
    block = blocklist()
    for term in block:
        if " " in term and term in low:
            return term
    for w in words:
        if w in block:
            return w
    return None


def check_synthetic(names: Iterable[object]) -> None:
    """Raise if any name is, or contains as a word, a real brand from the blocklist."""
    for name in names:
        term = _blocked(str(name))
        if term:
            raise BlockedNameError(f"{name!r} matches the real brand {term!r} (blocklist)")


def _word(rng: np.random.Generator, syllables: int) -> str:
    parts = []
    for _ in range(syllables):
        parts.append(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))])
    return ("".join(parts) + _CODAS[rng.integers(len(_CODAS))]).capitalize()


def synthetic_brands(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct brand names, skipping any candidate that spells a real brand."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        name = _word(rng, int(rng.integers(2, 4)))
        if name in seen or _blocked(name):
            continue
        seen.add(name)
        out.append(name)
    return out


def place_names(rng: np.random.Generator, n: int) -> list[str]:
    endings = ["ville", "ton", "field", " Springs", "wood", "burg", " Falls", "port", "dale", " Heights"]
    return [_word(rng, int(rng.integers(1, 3))) + endings[rng.integers(len(endings))] for _ in range(n)]


def people_names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last names drawn from small synthetic pools (vectorized: pools, then indexes)."""
    firsts = np.array([_word(rng, int(rng.integers(1, 3))) for _ in range(400)], dtype=object)
    lasts = np.array([_word(rng, int(rng.integers(2, 4))) for _ in range(800)], dtype=object)
    return firsts[rng.integers(0, len(firsts), n)], lasts[rng.integers(0, len(lasts), n)]

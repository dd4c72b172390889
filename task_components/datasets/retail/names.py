"""Synthetic names only: brands, companies, places and people are built from syllables, never taken from
a list of real ones, and every brand or company name is checked against a blocklist of real brands.

A generated name that happens to spell a real brand (or contains one as a word) is dropped and the
next candidate is taken, so the output is still deterministic; ``check_synthetic`` is also what the
tests run over every written name.

Curated dictionaries (the seed tool's ``data/dictionaries``) replace the syllable pools when given:
``first_names.csv`` (FirstName), ``last_names.csv`` (LastName), ``product_brands.csv`` (Brand) and
``geographies.csv`` (City); each file's named column, else its first. Brands from a file pass the same
blocklist, so a curated list cannot smuggle in a real brand.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "DICTIONARIES",
    "BlockedNameError",
    "blocklist",
    "check_synthetic",
    "dictionary",
    "people_names",
    "place_names",
    "synthetic_brands",
]

# file -> the column holding the names (the seed tool's headers)
DICTIONARIES = {"first_names.csv": "FirstName", "last_names.csv": "LastName", "product_brands.csv": "Brand", "geographies.csv": "City"}

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


def dictionary(folder: str | None, file: str) -> list[str] | None:
    """The distinct names of one curated dictionary file in file order, or None if none is configured or
    the folder lacks it (then the synthetic pools are used, with a warning if the folder itself is
    missing). A file without a usable name is refused."""
    if not folder:
        return None
    path = Path(folder) / file
    if not path.exists():
        if not Path(folder).is_dir():
            _missing_dir(folder)
        return None
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty dictionary file")
    header = [h.strip() for h in rows[0]]
    col = header.index(DICTIONARIES[file]) if DICTIONARIES[file] in header else 0
    names = list(dict.fromkeys(r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()))
    if not names:
        raise ValueError(f"{path}: no names in column {header[col]!r}")
    return names


@lru_cache(maxsize=8)
def _missing_dir(folder: str) -> None:
    """Said once per folder: the seed tool's default config names data/dictionaries, which may not exist here."""
    import structlog

    structlog.get_logger("datasets.retail").warning("dictionary_dir_missing", folder=folder, using="synthetic names")


def pick(rng: np.random.Generator, names: list[str], n: int) -> np.ndarray:
    return np.array(names, dtype=object)[rng.integers(0, len(names), n)]

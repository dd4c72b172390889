"""Faker-backed values a field asks for: ``name: Annotated[str, Fake("name")]``.

The seeding tool our users come from fills its documents with Faker; here a model field asks for a
provider in its type, as a reference field names its collection, and the seeder fills every such field a
generator left out (a generator that sets the field wins, so correlated values stay in its hands). A
batch's Faker is seeded from the batch's own random generator after the generator has run, so the same
seed gives the same values and a generator's numpy draws do not move when a Faker field is added.
Fields inside sub-documents and lists of sub-documents are filled too. Provider names are checked when
a pack is loaded (a typo is a configuration error, exit 2), not at the first document.

Faker's values for a seed are stable within one Faker version, not across versions (its word lists
change): pin Faker where documents must be byte-identical across installs.
"""

from __future__ import annotations

import datetime as dt
import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

__all__ = ["Fake", "Locale", "check_providers", "fake_paths", "fill_fakes", "new_faker"]

Locale = str | tuple[str, ...]


class Fake:
    """Marks a field as filled by Faker's ``provider`` (``Fake("sentence", nb_words=8)``; ``locale``
    overrides the pack's)."""

    __slots__ = ("kwargs", "locale", "provider")

    def __init__(self, provider: str, /, *, locale: Locale | None = None, **kwargs: Any) -> None:
        self.provider = provider
        self.locale = locale
        self.kwargs = kwargs

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"Fake({self.provider!r}{args})"


def _nested(annotation: Any) -> Iterator[type[BaseModel]]:
    stack = [annotation]
    while stack:
        a = stack.pop()
        if typing.get_origin(a) is typing.Annotated:
            stack.append(typing.get_args(a)[0])
        elif isinstance(a, type) and issubclass(a, BaseModel):
            yield a
        elif typing.get_origin(a) in (list, tuple, typing.Union, types.UnionType):
            stack += [x for x in typing.get_args(a) if x is not type(None) and x is not Ellipsis]


def fake_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Fake]]:
    """(path to the field, its Fake marker) for every field of ``model`` that asks for one, nested too."""
    out: list[tuple[tuple[str, ...], Fake]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        marker = next((m for m in info.metadata if isinstance(m, Fake)), None)
        if marker is not None:
            out.append(((*prefix, key), marker))
        for sub in _nested(info.annotation):
            out += fake_paths(sub, (*prefix, key))
    return out


def new_faker(locale: Locale, seed: int) -> Any:
    from faker import Faker

    fake = Faker(list(locale) if isinstance(locale, tuple) else locale)
    fake.seed_instance(seed)
    return fake


@lru_cache(maxsize=16)
def _provider_names(locale: Locale) -> frozenset[str]:
    fake = new_faker(locale, 0)
    return frozenset(n for n in dir(fake) if not n.startswith("_"))


def check_providers(collection: str, model: type[BaseModel], locale: Locale) -> str | None:
    """The first field asking for a provider Faker does not have (with the closest name), or None."""
    for path, marker in fake_paths(model):
        loc = marker.locale or locale
        try:
            names = _provider_names(loc)
        except AttributeError as exc:  # an unknown locale
            return f"{collection}.{'.'.join(path)}: Faker locale {loc!r}: {exc}"
        if marker.provider not in names:
            close = difflib.get_close_matches(marker.provider, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"{collection}.{'.'.join(path)}: Faker has no provider {marker.provider!r}{hint}"
    return None


def _bson_safe(value: Any) -> Any:
    """Faker returns dates, Decimals and tuples, which BSON cannot store as such."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        from bson.decimal128 import Decimal128

        return Decimal128(value)
    if isinstance(value, tuple | set):
        return [_bson_safe(v) for v in value]
    return value


def _set_missing(doc: Any, path: tuple[str, ...], make: Any) -> None:
    if isinstance(doc, list):
        for item in doc:
            _set_missing(item, path, make)
    elif isinstance(doc, dict):
        if len(path) == 1:
            if path[0] not in doc:
                doc[path[0]] = make()
        elif path[0] in doc:
            _set_missing(doc[path[0]], path[1:], make)


def fill_fakes(docs: Sequence[dict[str, Any]], paths: Sequence[tuple[tuple[str, ...], Fake]], locale: Locale, seed: int) -> None:
    """Set every Faker field a generator left out, in place, document by document (one Faker per locale)."""
    fakers: dict[Locale, Any] = {}
    for doc in docs:
        for path, marker in paths:
            loc = marker.locale or locale
            if loc not in fakers:
                fakers[loc] = new_faker(loc, seed)
            method = getattr(fakers[loc], marker.provider)
            _set_missing(doc, path, lambda m=method, kw=marker.kwargs: _bson_safe(m(**kw)))

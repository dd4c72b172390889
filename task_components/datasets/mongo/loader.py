"""Where a document pack comes from: a built-in name, the user's own module, or a Python file.

``pack:`` takes ``ecommerce`` (built in), ``my_module:PACK`` (an importable module, the current
directory included, as ``python -m`` would), ``path/to/pack.py`` or ``path/to/pack.py:PACK``. A bare
name is only ever a built-in pack (a typo is never imported as some installed module). Without
``:NAME`` the file must define exactly one ``DocPack``; ``NAME`` may also be a function taking no
arguments that returns one. Users define their collections in their own module, as the seeding tool they
come from has them do, and never edit this project to add a pack.

A pack is loaded once per process (a file or module is imported once, so ``pack.py`` and
``./pack.py:PACK`` are the same ``DocPack`` and its models the same classes in every task) and checked
when loaded: references to collections the pack does not have, a Faker provider or locale that does not
exist, and an index MongoDB would refuse (raised by ``IndexDef`` itself when the module runs) are
configuration errors, reported before anything runs. A relative path is taken from the current
directory; ``${pipeline.dir}/pack.py`` names a file beside the pipeline file.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

from task_components.datasets.mongo.fake import check_providers
from task_components.datasets.mongo.model import DocPack
from task_components.datasets.pack import PackConfigError

__all__ = ["builtin_doc_packs", "check_pack", "load_doc_pack"]

_modules: dict[str, ModuleType] = {}  # by resolved file or module name: imported once
_loaded: dict[tuple[str, str | None], DocPack] = {}


def builtin_doc_packs() -> dict[str, DocPack]:
    from task_components.datasets.mongo.ecommerce import ECOMMERCE

    return {ECOMMERCE.name: ECOMMERCE}


def load_doc_pack(spec: str) -> DocPack:
    """The pack ``spec`` names (see the module docstring), or a PackConfigError saying why not."""
    known = builtin_doc_packs()
    if spec in known:
        return known[spec]
    head, sep, tail = spec.rpartition(":")
    target, attr = (head, tail) if sep and tail.isidentifier() and head else (spec, None)
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    is_module = attr is not None and all(part.isidentifier() for part in target.split("."))
    if not (is_file or is_module):
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known document packs: {', '.join(sorted(known))}"
        raise PackConfigError(f"unknown document pack {spec!r}; {hint} (your own: my_module:PACK or path/to/pack.py)")
    path = Path(target).expanduser().resolve() if is_file else None
    where = str(path or target)
    if where not in _modules:
        _modules[where] = _from_file(path, spec) if path is not None else _from_module(target, spec)
    key = (where, attr)
    if key not in _loaded:
        pack = _pick(_modules[where], attr, spec)
        check_pack(pack, spec)
        _loaded[key] = pack
    return _loaded[key]


def _from_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise PackConfigError(f"document pack {spec!r}: no such file {str(path)!r}")
    name = f"_doc_pack_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise PackConfigError(f"document pack {spec!r}: {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module  # pydantic resolves the models' annotations through sys.modules
    try:
        found.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PackConfigError(f"document pack {spec!r}: {path.name} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _from_module(target: str, spec: str) -> ModuleType:
    cwd = os.getcwd()
    for attempt in (1, 2):
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as exc:
            top = target.split(".")[0]
            if exc.name == top and attempt == 1 and cwd not in sys.path:
                sys.path.append(cwd)  # appended, never first: a user's file must not shadow the stdlib
                continue
            if exc.name == top:
                raise PackConfigError(f"document pack {spec!r}: no module {target!r} (on sys.path or in {cwd})") from None
            raise PackConfigError(f"document pack {spec!r}: importing {target} failed: {exc}") from exc
        except Exception as exc:
            raise PackConfigError(f"document pack {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _pick(module: ModuleType, attr: str | None, spec: str) -> DocPack:
    packs = {k: v for k, v in vars(module).items() if isinstance(v, DocPack)}
    if attr is None:
        if len(packs) == 1:
            return next(iter(packs.values()))
        if not packs:
            raise PackConfigError(f"document pack {spec!r}: the module defines no DocPack")
        raise PackConfigError(f"document pack {spec!r}: the module defines several DocPacks ({', '.join(packs)}): name one, {spec}:NAME")
    obj: Any = getattr(module, attr, None)
    if obj is None:
        have = f"; it defines {', '.join(packs)}" if packs else "; it defines no DocPack"
        raise PackConfigError(f"document pack {spec!r}: the module has no {attr!r}{have}")
    if callable(obj) and not isinstance(obj, DocPack):
        try:
            obj = obj()
        except Exception as exc:
            raise PackConfigError(f"document pack {spec!r}: {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, DocPack):
        raise PackConfigError(f"document pack {spec!r}: {attr} is a {type(obj).__name__}, not a DocPack")
    return obj


def check_pack(pack: DocPack, spec: str | None = None) -> None:
    """Refuse what is certainly wrong in a pack before anything runs (a PackConfigError naming it)."""
    where = f"document pack {spec or pack.name!r}"
    if not pack.collections:
        raise PackConfigError(f"{where} has no collections")
    for key, coll in pack.collections.items():
        if key != coll.name:
            raise PackConfigError(f"{where}: collection {coll.name!r} is filed under the key {key!r}")
        unknown = [r for r in coll.references if r not in pack.collections]
        if unknown:
            raise PackConfigError(f"{where}: {coll.name} references {', '.join(unknown)}, which the pack does not have")
        if coll.name in coll.references:
            raise PackConfigError(f"{where}: {coll.name} references itself; seed the parents as their own collection")
        names = [i.name for i in coll.indexes]
        if len(set(names)) != len(names):
            raise PackConfigError(f"{where}: {coll.name} declares an index name twice")
        problem = check_providers(coll.name, coll.model, pack.locale)
        if problem:
            raise PackConfigError(f"{where}: {problem}")

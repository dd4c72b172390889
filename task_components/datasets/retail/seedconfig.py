"""The retail seed tool's ``config.json``, accepted as is and translated to this pack's settings.

Its sections map one to one where the two tools mean the same thing:

    seed                       -> seed
    volume.stores / dcs        -> stores / dcs
    volume.total_customers     -> customers
    volume.customers_per_day   -> receipts_per_store_day (the seed tool's daily transactions per store)
    volume.total_products      -> products
    paths.dict / dictionaries  -> dictionary_dir (curated first_names.csv, last_names.csv, ...)
    paths.master / facts       -> dims_dir / facts_dir; out (the state's home) is their common parent,
                                  as the seed tool keeps generation_state.json beside them
    historical.start_date      -> start_date
    realtime.emit_interval_ms / burst -> realtime.emit_interval_ms / burst

Its facts are partitioned CSV, so a file in its format defaults to ``format: csv``. Keys that only make
sense for its Azure transport (``realtime.azure_connection_string``, the ``stream`` section) are ignored
with a warning: events go to Kafka (``KAFKA__BOOTSTRAP_SERVERS``). Any other key is refused, all of them
named in one line, because a silently ignored volume would generate the wrong data.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import structlog

from task_components.datasets.pack import PackConfigError

__all__ = ["SEED_SECTIONS", "is_seed_config", "translate"]

log = structlog.get_logger("datasets.retail")

VOLUME = {"stores": "stores", "dcs": "dcs", "total_customers": "customers", "customers_per_day": "receipts_per_store_day"}
VOLUME |= {"total_products": "products"}
PATHS = {"dict", "dictionaries", "master", "facts"}
HISTORICAL = {"start_date": "start_date"}
REALTIME = {"emit_interval_ms", "burst", "fulfilment_seconds"}
IGNORED = {"realtime.azure_connection_string": "events go to Kafka (KAFKA__BOOTSTRAP_SERVERS)"}
SEED_SECTIONS = {"volume", "paths", "historical", "realtime", "stream"}


def is_seed_config(raw: dict[str, Any]) -> bool:
    """A file in the seed tool's shape: one of its sections holds a mapping (ours are flat, but ``realtime``)."""
    return any(isinstance(raw.get(k), dict) for k in SEED_SECTIONS - {"realtime"}) or (
        isinstance(raw.get("realtime"), dict) and bool(set(raw["realtime"]) - REALTIME)
    )


def _section(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise PackConfigError(f"{where}: section {name!r} holds a mapping of settings (got {value!r})")
    return value


def translate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Our settings from a seed-tool config (anything else passes through unchanged)."""
    if not is_seed_config(raw):
        return raw
    from task_components.datasets.retail.config import RetailConfig

    ours = set(RetailConfig.model_fields)
    out: dict[str, Any] = {"format": "csv"}
    unknown: list[str] = []
    for key, value in raw.items():
        if key in SEED_SECTIONS:
            continue
        if key in ours:
            out[key] = value  # our own setting beside the seed's sections (e.g. format, days)
        else:
            unknown.append(key)
    for key, value in _section(raw, "volume", where).items():
        if key in VOLUME:
            out[VOLUME[key]] = value
        else:
            unknown.append(f"volume.{key}")
    paths = _section(raw, "paths", where)
    unknown += [f"paths.{k}" for k in paths if k not in PATHS]
    dictionary = paths.get("dictionaries", paths.get("dict"))
    if dictionary:
        out["dictionary_dir"] = str(dictionary)
    master, facts = paths.get("master"), paths.get("facts")
    if master or facts:
        homes = [os.path.dirname(os.path.normpath(str(p))) or "." for p in (master, facts) if p]
        try:
            out.setdefault("out", os.path.commonpath(homes) if len(homes) > 1 else homes[0])
        except ValueError:  # one absolute, one relative: the state goes beside the facts
            out.setdefault("out", homes[-1])
        if master:
            out["dims_dir"] = str(master)
        if facts:
            out["facts_dir"] = str(facts)
    for key, value in _section(raw, "historical", where).items():
        if key in HISTORICAL:
            out[HISTORICAL[key]] = value
        else:
            unknown.append(f"historical.{key}")
    realtime: dict[str, Any] = {}
    for key, value in _section(raw, "realtime", where).items():
        if key in REALTIME:
            realtime[key] = value
        elif f"realtime.{key}" in IGNORED:
            log.warning("seed_config_key_ignored", file=where, key=f"realtime.{key}", why=IGNORED[f"realtime.{key}"])
        else:
            unknown.append(f"realtime.{key}")
    if realtime:
        out["realtime"] = realtime
    if "stream" in raw:
        log.warning("seed_config_key_ignored", file=where, key="stream", why="events go to Kafka (dataset.events / dataset.realtime)")
    if unknown:
        known = [*VOLUME, *PATHS, *HISTORICAL, *REALTIME, *ours]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1)
            hints.append(f"{key} (did you mean {close[0]!r}?)" if close else key)
        raise PackConfigError(f"{where}: unknown settings in the seed tool's config: {', '.join(hints)}")
    log.info("seed_config_translated", file=where, settings=sorted(out))
    return out

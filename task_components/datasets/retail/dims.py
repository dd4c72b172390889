"""Retail dimensions: geographies, distribution centers, stores, trucks, customers, products.

Each dimension is rebuilt on every run from the seed alone (the same bytes each time), so an incremental
run reads exactly the dimensions its earlier runs referenced. Keys are 1..n, which lets facts map a key
to its row with one subtraction instead of a join. Stores are only placed in states a distribution
center serves, and each store is served by one of those centers.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from task_components.datasets.pack import PackRun, rng_for, write_parquet
from task_components.datasets.retail.fast_io import read_dim
from task_components.datasets.retail.names import (
    CATEGORIES,
    COMPANY_SUFFIXES,
    check_synthetic,
    dictionary,
    people_names,
    pick,
    place_names,
    synthetic_brands,
)

__all__ = ["SEGMENTS", "STATES"]

# contiguous US states in a rough geographic walk: a window of them is a plausible DC service region
STATES = [
    "WA",
    "OR",
    "CA",
    "NV",
    "ID",
    "MT",
    "WY",
    "UT",
    "AZ",
    "NM",
    "CO",
    "ND",
    "SD",
    "NE",
    "KS",
    "OK",
    "TX",
    "MN",
    "IA",
    "MO",
    "AR",
    "LA",
    "WI",
    "IL",
    "MS",
    "MI",
    "IN",
    "KY",
    "TN",
    "AL",
    "OH",
    "WV",
    "VA",
    "NC",
    "SC",
    "GA",
    "FL",
    "PA",
    "MD",
    "DE",
    "NJ",
    "NY",
    "CT",
    "RI",
    "MA",
    "VT",
    "NH",
    "ME",
]
# segment -> (share of customers, mean items per basket)
SEGMENTS = {"budget": (0.35, 3.0), "family": (0.30, 6.0), "premium": (0.15, 4.0), "convenience": (0.20, 2.0)}


def _cities(rng: np.random.Generator, n: int, folder: str | None, seed: int) -> list[str]:
    synthetic = place_names(rng, n)  # drawn either way, so the rest of the table is the same with a dictionary
    curated = dictionary(folder, "geographies.csv")
    return synthetic if not curated else list(pick(rng_for(seed, "cities"), curated, n).astype(str))


def geographies(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "geographies")
    n = c.geographies
    state_idx = np.concatenate([np.arange(min(n, len(STATES))), rng.integers(0, len(STATES), max(0, n - len(STATES)))])
    state_tax = rng.integers(400, 1000, len(STATES))  # basis points
    tax = state_tax[state_idx] + rng.integers(0, 150, n)
    zips = rng.choice(np.arange(10_000, 99_999), n, replace=False)
    table = pa.table(
        {
            "geography_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
            "city": pa.array(_cities(rng, n, c.dictionary_dir, c.seed)),
            "state": pa.array(np.array(STATES)[state_idx]),
            "zip": pa.array([f"{z:05d}" for z in zips]),
            "tax_rate_bp": pa.array(tax.astype(np.int32)),
        }
    )
    return {"geographies": write_parquet(table, run.dim_path("geographies"))}


def distribution_centers(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "distribution_centers")
    geo = read_dim(run, "geographies").to_pydict()
    first_geo: dict[str, int] = {}
    for gid, st in zip(geo["geography_id"], geo["state"], strict=True):
        first_geo.setdefault(st, gid)
    window = -(-len(STATES) // c.dcs)
    homes = [(i * len(STATES)) // c.dcs for i in range(c.dcs)]
    names = [f"{b} Logistics" for b in synthetic_brands(rng, c.dcs)]
    check_synthetic(names)
    table = pa.table(
        {
            "dc_id": pa.array(np.arange(1, c.dcs + 1, dtype=np.int32)),
            "name": pa.array(names),
            "geography_id": pa.array([_home_geo(first_geo, h) for h in homes], pa.int32()),
            "state": pa.array([STATES[h] for h in homes]),
            "served_states": pa.array([[STATES[(h + k) % len(STATES)] for k in range(window)] for h in homes]),
        }
    )
    return {"distribution_centers": write_parquet(table, run.dim_path("distribution_centers"))}


def _home_geo(first_geo: dict[str, int], home: int) -> int:
    """The first geography of the DC's home state, or of the next state that has one (few geographies)."""
    for k in range(len(STATES)):
        state = STATES[(home + k) % len(STATES)]
        if state in first_geo:
            return first_geo[state]
    raise ValueError("the pack has no geographies to place a distribution center in")


def stores(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "stores")
    geo = read_dim(run, "geographies").to_pydict()
    dcs = read_dim(run, "distribution_centers").to_pydict()
    serving: dict[str, list[int]] = {}
    for dc_id, served in zip(dcs["dc_id"], dcs["served_states"], strict=True):
        for st in served:
            serving.setdefault(st, []).append(dc_id)
    eligible = np.array([i for i, st in enumerate(geo["state"]) if st in serving])
    pick = eligible[rng.integers(0, len(eligible), c.stores)]
    states = np.array(geo["state"], dtype=object)[pick]
    dc_choice = rng.random(c.stores)
    dc_ids = [serving[st][int(u * len(serving[st]))] for st, u in zip(states, dc_choice, strict=True)]
    size = np.clip(rng.lognormal(0.0, 0.3, c.stores), 0.5, 2.0)
    chain = synthetic_brands(rng_for(c.seed, "chain"), 1)[0]
    check_synthetic([chain])
    cities = np.array(geo["city"], dtype=object)[pick]
    table = pa.table(
        {
            "store_id": pa.array(np.arange(1, c.stores + 1, dtype=np.int32)),
            "name": pa.array([f"{chain} #{i + 1:04d} {city}" for i, city in enumerate(cities)]),
            "geography_id": pa.array(np.array(geo["geography_id"], dtype=np.int32)[pick]),
            "state": pa.array(states.astype(str)),
            "dc_id": pa.array(np.array(dc_ids, dtype=np.int32)),
            "open_hour": pa.array(rng.choice(np.array([6, 7, 8, 9], dtype=np.int8), c.stores, p=[0.2, 0.4, 0.3, 0.1])),
            "close_hour": pa.array(rng.choice(np.array([20, 21, 22, 23], dtype=np.int8), c.stores, p=[0.2, 0.3, 0.4, 0.1])),
            "size_factor": pa.array(np.round(size, 3)),
            "square_feet": pa.array((np.round(size * 40) * 1000).astype(np.int32)),
        }
    )
    return {"stores": write_parquet(table, run.dim_path("stores"))}


def trucks(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "trucks")
    n = c.dcs * c.trucks_per_dc
    cap = np.round(c.truck_capacity * rng.uniform(0.75, 1.25, n)).astype(np.int32)
    table = pa.table(
        {
            "truck_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
            "dc_id": pa.array(np.repeat(np.arange(1, c.dcs + 1, dtype=np.int32), c.trucks_per_dc)),
            "capacity_units": pa.array(cap),
            "plate": pa.array([f"SYN-{p:06d}" for p in rng.choice(1_000_000, n, replace=False)]),
        }
    )
    return {"trucks": write_parquet(table, run.dim_path("trucks"))}


def customers(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "customers")
    st = read_dim(run, "stores")
    size = st["size_factor"].to_numpy()
    n = c.customers
    rest = rng.choice(c.stores, max(0, n - c.stores), p=size / size.sum())
    home = np.concatenate([np.arange(min(n, c.stores)), rest])
    shares = np.array([s for s, _ in SEGMENTS.values()])
    segment = np.array(list(SEGMENTS))[rng.choice(len(SEGMENTS), n, p=shares)]
    firsts, lasts = people_names(rng, n)
    curated_first, curated_last = dictionary(c.dictionary_dir, "first_names.csv"), dictionary(c.dictionary_dir, "last_names.csv")
    if curated_first:
        firsts = pick(rng_for(c.seed, "first_names"), curated_first, n)
    if curated_last:
        lasts = pick(rng_for(c.seed, "last_names"), curated_last, n)
    joined = np.datetime64(run.origin) - rng.integers(0, 5 * 365, n).astype("timedelta64[D]")
    table = pa.table(
        {
            "customer_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "first_name": pa.array(firsts.astype(str)),
            "last_name": pa.array(lasts.astype(str)),
            "segment": pa.array(segment),
            "home_store_id": pa.array(st["store_id"].to_numpy()[home]),
            "geography_id": pa.array(st["geography_id"].to_numpy()[home]),
            "loyalty_member": pa.array(rng.random(n) < 0.4),
            "joined_date": pa.array(joined, pa.date32()),
        }
    )
    return {"customers": write_parquet(table, run.dim_path("customers"))}


def price_ladder(rng: np.random.Generator, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MSRP within base +/-15%, sale price <= MSRP, cost 50-85% of the sale price, all in whole cents.

    Rounding can push a value past a bound by a cent, so each is clipped to the integer bounds of its rule.
    """
    msrp = np.clip(np.round(base * rng.uniform(0.85, 1.15, base.size)), -(-base * 85 // 100), base * 115 // 100)
    sale = np.maximum(np.floor(msrp * rng.uniform(0.70, 1.0, base.size)), 2).astype(np.int64)
    cost = np.clip(np.round(sale * rng.uniform(0.5, 0.85, base.size)), -(-sale * 50 // 100), sale * 85 // 100)
    return msrp.astype(np.int64), sale, cost.astype(np.int64)


def products(run: PackRun) -> dict[str, int]:
    c = run.config
    rng = rng_for(c.seed, "products")
    n = c.products
    brands = synthetic_brands(rng, c.brands)
    curated = dictionary(c.dictionary_dir, "product_brands.csv")
    if curated:  # the first `brands` of the curated list (cycled if shorter): a product's brand is one of them
        brands = [curated[i % len(curated)] for i in range(min(c.brands, len(curated)))]
    companies = [f"{b} {COMPANY_SUFFIXES[i % len(COMPANY_SUFFIXES)]}" for i, b in enumerate(brands)]
    check_synthetic(brands + companies)
    brand_idx = rng.integers(0, len(brands), n)
    cats = list(CATEGORIES)
    cat_idx = rng.integers(0, len(cats), n)
    lo = np.array([CATEGORIES[k][0] for k in cats])[cat_idx]
    hi = np.array([CATEGORIES[k][1] for k in cats])[cat_idx]
    base = np.round(np.exp(rng.uniform(np.log(lo), np.log(hi)))).astype(np.int64)
    msrp, sale, cost = price_ladder(rng, base)
    popularity = 1.0 / np.arange(1, n + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    brand_arr = np.array(brands, dtype=object)[brand_idx]
    cat_arr = np.array(cats, dtype=object)[cat_idx]
    table = pa.table(
        {
            "product_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
            "sku": pa.array([f"SKU{i:07d}" for i in range(1, n + 1)]),
            "name": pa.array([f"{b} {k} {i % 97 + 1}" for i, (b, k) in enumerate(zip(brand_arr, cat_arr, strict=True))]),
            "brand": pa.array(brand_arr.astype(str)),
            "company": pa.array(np.array(companies, dtype=object)[brand_idx].astype(str)),
            "category": pa.array(cat_arr.astype(str)),
            "base_price_cents": pa.array(base),
            "msrp_cents": pa.array(msrp),
            "sale_price_cents": pa.array(sale),
            "cost_cents": pa.array(cost),
            "popularity": pa.array(popularity),
        }
    )
    return {"products": write_parquet(table, run.dim_path("products"))}


EPOCH_DAY = date(2000, 1, 1)


def day_no(day: date) -> int:
    """Days since 2000-01-01: the high part of every fact key, so keys of different days never collide."""
    return (day - EPOCH_DAY).days


def day_start(day: date) -> int:
    """Epoch seconds of the day's midnight (timestamps are naive, store-local)."""
    return int((day - date(1970, 1, 1)) / timedelta(seconds=1))

"""The example document pack: an e-commerce app (users, products, orders, reviews, sessions, page views).

It shows every part of a pack: typed fields and references (orders -> users, order items -> products),
unique, compound, descending, TTL, 2dsphere (users' locations) and partial (well-rated reviews) indexes,
text (product titles and tags) and hashed (sessions by user) indexes marked optional (a server without
them, such as SecantusDB, seeds without them and says so), Faker values where a field asks for one
(``Fake("name")``), weighted and time-ordered distributions, computed fields checked by model validators
(an order's total is the sum of its items), and a time-series collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field, model_validator

from task_components.datasets.mongo.fake import Fake
from task_components.datasets.mongo.model import (
    Batch,
    CollectionDef,
    DocPack,
    GeoPoint,
    IndexDef,
    Ref,
    TimeSeries,
    geo_points,
    weighted,
)

__all__ = ["ECOMMERCE"]

ORIGIN = datetime(2024, 1, 1)
SPAN = timedelta(days=365)
UserId = Annotated[ObjectId, Ref("users")]
ProductId = Annotated[ObjectId, Ref("products")]


class Doc(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)
    id: ObjectId = Field(alias="_id")


class User(Doc):
    email: str = Field(pattern=r"^[a-z0-9.]+@[a-z0-9.-]+\.[a-z]+$")
    name: Annotated[str, Fake("name"), Field(min_length=1)]  # filled by Faker
    tier: Literal["free", "plus", "pro"]
    country: str = Field(pattern=r"^[A-Z]{2}$")
    location: GeoPoint  # near the country's centre; a 2dsphere index reads it
    created_at: datetime
    preferences: dict[str, Any]  # flexible custom fields


class Product(Doc):
    sku: str
    title: str
    category: Literal["books", "games", "garden", "kitchen", "outdoor", "toys"]
    price_cents: int = Field(gt=0)
    stock: int = Field(ge=0)
    tags: list[str]


class OrderItem(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    product_id: ProductId
    qty: int = Field(ge=1)
    unit_price_cents: int = Field(gt=0)
    line_total_cents: int

    @model_validator(mode="after")
    def _line_total(self) -> OrderItem:
        if self.line_total_cents != self.qty * self.unit_price_cents:
            raise ValueError("line_total_cents is not qty x unit_price_cents")
        return self


class Order(Doc):
    user_id: UserId
    status: Literal["placed", "paid", "shipped", "delivered", "cancelled"]
    items: list[OrderItem] = Field(min_length=1)
    total_cents: int  # computed: the sum of the line totals
    created_at: datetime

    @model_validator(mode="after")
    def _total(self) -> Order:
        if self.total_cents != sum(i.line_total_cents for i in self.items):
            raise ValueError("total_cents is not the sum of the items' line totals")
        return self


class Review(Doc):
    user_id: UserId
    product_id: ProductId
    rating: int = Field(ge=1, le=5)
    body: Annotated[str, Fake("sentence", nb_words=12)]
    created_at: datetime


class Session(Doc):
    user_id: UserId
    device: Literal["web", "ios", "android"]
    created_at: datetime


class PageViewMeta(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    user_id: UserId
    device: Literal["web", "ios", "android"]


class PageView(Doc):
    ts: datetime
    meta: PageViewMeta
    path: str
    ms_on_page: int = Field(ge=0)


CENTRES = {"US": (-98.5, 39.8), "DE": (10.4, 51.2), "FR": (2.2, 46.2), "JP": (138.3, 36.2), "BR": (-51.9, -14.2)}
WORDS = ["amber", "brisk", "cobalt", "dune", "ember", "fable", "glade", "harbor", "iris", "juniper", "kite", "lumen"]


def _users(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    w1, w2 = rng.integers(0, len(WORDS), n), rng.integers(0, len(WORDS), n)
    # emails from a finite space: a few collide on purpose, so the unique index has something to refuse
    num = rng.integers(0, max(b.total, 100), n)
    tiers = weighted(rng, ["free", "plus", "pro"], [0.75, 0.2, 0.05], n)
    countries = weighted(rng, ["US", "DE", "FR", "JP", "BR"], [0.5, 0.15, 0.1, 0.15, 0.1], n)
    times = b.times(ORIGIN, SPAN)
    news = rng.random(n) < 0.3
    places = geo_points(rng, [CENTRES[c] for c in countries], spread_deg=2.0)
    return [
        {
            "_id": ids[i],
            "email": f"{WORDS[w1[i]]}.{WORDS[w2[i]]}{num[i]}@example.test",
            "tier": tiers[i],
            "country": countries[i],
            "location": places[i],
            "created_at": times[i],
            "preferences": {"newsletter": bool(news[i])},
        }
        for i in range(n)
    ]


CATEGORIES = ["books", "games", "garden", "kitchen", "outdoor", "toys"]


def _products(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    cats = weighted(rng, CATEGORIES, [3, 2, 1, 2, 1, 2], n)
    price = np.round(np.exp(rng.normal(7.5, 0.8, n))).astype(int) + 99
    stock = rng.integers(0, 500, n)
    n_tags = rng.integers(0, 4, n)
    return [
        {
            "_id": ids[i],
            "sku": f"EC-{b.first + i:07d}",
            "title": f"{WORDS[(b.first + i) % len(WORDS)].title()} {cats[i]}",
            "category": cats[i],
            "price_cents": int(price[i]),
            "stock": int(stock[i]),
            "tags": weighted(rng, WORDS, [1] * len(WORDS), int(n_tags[i])),
        }
        for i in range(n)
    ]


def _popular(rng: np.random.Generator, ids: Sequence[ObjectId], n: int) -> list[ObjectId]:
    """Zipf-like choice: a few parents get many children (popular products, heavy buyers)."""
    ranks = np.minimum(rng.zipf(1.6, n) - 1, len(ids) - 1)
    return [ids[r] for r in ranks]


def _orders(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    users = _popular(rng, b.parents["users"], n)
    statuses = weighted(rng, ["placed", "paid", "shipped", "delivered", "cancelled"], [1, 2, 3, 10, 1], n)
    times = b.times(ORIGIN + timedelta(days=7), SPAN)
    products, prices = b.parents["products"], b.parents["products.price_cents"]
    docs = []
    for i in range(n):
        picks = rng.integers(0, len(products), int(rng.integers(1, 5)))
        qty = rng.integers(1, 4, picks.size)
        items = [
            {"product_id": products[p], "qty": int(q), "unit_price_cents": int(prices[p]), "line_total_cents": int(q) * int(prices[p])}
            for p, q in zip(picks, qty, strict=True)
        ]
        total = sum(it["line_total_cents"] for it in items)  # the computed field
        docs.append(
            {"_id": ids[i], "user_id": users[i], "status": statuses[i], "items": items, "total_cents": total, "created_at": times[i]}
        )
    return docs


def _reviews(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    users = _popular(rng, b.parents["users"], n)
    products = _popular(rng, b.parents["products"], n)
    ratings = weighted(rng, [1, 2, 3, 4, 5], [0.05, 0.07, 0.15, 0.33, 0.4], n)
    times = b.times(ORIGIN + timedelta(days=14), SPAN)
    return [{"_id": ids[i], "user_id": users[i], "product_id": products[i], "rating": ratings[i], "created_at": times[i]} for i in range(n)]


def _sessions(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    users = _popular(rng, b.parents["users"], n)
    devices = weighted(rng, ["web", "ios", "android"], [0.5, 0.3, 0.2], n)
    times = b.times(ORIGIN, SPAN)
    return [{"_id": ids[i], "user_id": users[i], "device": devices[i], "created_at": times[i]} for i in range(n)]


def _page_views(b: Batch) -> list[dict[str, Any]]:
    rng, n, ids = b.rng, b.count, b.ids()
    users = _popular(rng, b.parents["users"], n)
    devices = weighted(rng, ["web", "ios", "android"], [0.5, 0.3, 0.2], n)
    paths = weighted(rng, ["/", "/search", "/product", "/cart", "/checkout"], [5, 3, 6, 2, 1], n)
    times = b.times(ORIGIN, SPAN)
    ms = rng.exponential(20_000, n).astype(int)
    return [
        {"_id": ids[i], "ts": times[i], "meta": {"user_id": users[i], "device": devices[i]}, "path": paths[i], "ms_on_page": int(ms[i])}
        for i in range(n)
    ]


USERS, PRODUCTS, ORDERS, REVIEWS, SESSIONS, PAGE_VIEWS = 2000, 500, 5000, 1500, 3000, 6000
FIVE_YEARS = 5 * 365 * 24 * 3600

_COLLECTIONS = [
    CollectionDef(
        "users",
        User,
        USERS,
        _users,
        (
            IndexDef((("email", 1),), "email_unique", unique=True),
            IndexDef((("country", 1), ("tier", 1)), "country_tier"),
            IndexDef((("created_at", -1),), "newest_first"),
            IndexDef((("location", "2dsphere"),), "location_geo"),
        ),
    ),
    CollectionDef(
        "products",
        Product,
        PRODUCTS,
        _products,
        (
            IndexDef((("sku", 1),), "sku_unique", unique=True),
            IndexDef((("category", 1), ("price_cents", -1)), "category_price"),
            IndexDef((("title", "text"), ("tags", "text")), "title_tags_text", optional=True),
        ),
    ),
    CollectionDef(
        "orders",
        Order,
        ORDERS,
        _orders,
        (
            IndexDef((("user_id", 1), ("created_at", -1)), "user_recent"),
            IndexDef((("status", 1),), "status"),
            IndexDef((("items.product_id", 1),), "item_product"),
        ),
        parent_fields={"products": ("price_cents",)},
    ),
    CollectionDef(
        "reviews",
        Review,
        REVIEWS,
        _reviews,
        (
            IndexDef((("product_id", 1), ("rating", -1)), "product_rating"),
            IndexDef((("product_id", 1), ("created_at", -1)), "well_rated_recent", partial={"rating": {"$gte": 4}}),
        ),
    ),
    CollectionDef(
        "sessions",
        Session,
        SESSIONS,
        _sessions,
        (
            IndexDef((("created_at", 1),), "expire_after_5y", ttl_seconds=FIVE_YEARS),
            IndexDef((("user_id", 1),), "user"),
            IndexDef((("user_id", "hashed"),), "user_hashed", optional=True),
        ),
    ),
    CollectionDef(
        "page_views", PageView, PAGE_VIEWS, _page_views, (IndexDef((("meta.user_id", 1), ("ts", -1)), "user_ts"),), TimeSeries("ts", "meta")
    ),
]

ECOMMERCE = DocPack(
    name="ecommerce",
    summary="an online shop: users, products, orders with items, reviews, sessions (TTL), page views (time series)",
    collections={c.name: c for c in _COLLECTIONS},
    origin=ORIGIN,
)

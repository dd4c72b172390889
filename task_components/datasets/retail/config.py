"""The retail pack's settings (a YAML file, overridable per task) and its calendar of demand.

Demand for a day is a product of multipliers: season (a yearly wave with a January lull), holidays
(back to school, Black Friday, the weeks before Christmas), and day of week; within a day, an hour
profile with a lunch and an after-work peak, cut to each store's opening hours. Stores close on
Thanksgiving and Christmas Day: those days have no receipts and no foot traffic.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["HOUR_PROFILE", "ONLINE_HOUR_PROFILE", "RealtimeSettings", "RetailConfig", "day_multiplier", "is_closed"]


class RealtimeSettings(BaseModel):
    """The realtime streamer's pace (the seed tool's ``realtime`` section): ``burst`` events every
    ``emit_interval_ms``, so the steady rate is burst / interval and the traffic arrives in bursts."""

    model_config = ConfigDict(extra="forbid")

    emit_interval_ms: int = Field(500, ge=1, le=3_600_000, description="time between bursts")
    burst: int = Field(100, ge=1, le=100_000, description="events per burst")
    fulfilment_seconds: float = Field(600.0, gt=0, le=86_400, description="mean time from an online order to its shipping")


class RetailConfig(BaseModel):
    """Bounds are what generation can hold (ids are int32, the stores x products balance matrix is in
    memory, a day's receipts are drawn at once): past them a run would overflow or exhaust memory, so
    the value is refused up front (exit 2) instead."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: int = Field(42, ge=0, lt=2**63)
    out: str = Field("retail_data", min_length=1, description="output directory (dims/, facts/, state/)")
    start_date: date = Field(date(2024, 1, 1), description="first day of the first run; later runs continue")
    days: int = Field(7, ge=1, le=3660, description="days of facts each run adds")
    geographies: int = Field(200, ge=10, le=100_000)
    dcs: int = Field(5, ge=1, le=200)
    stores: int = Field(50, ge=1, le=20_000)
    trucks_per_dc: int = Field(6, ge=1, le=1000)
    truck_capacity: int = Field(3000, ge=100, le=1_000_000, description="mean units a truck carries (+/-25%)")
    customers: int = Field(20_000, ge=1, le=50_000_000)
    products: int = Field(500, ge=10, le=200_000)
    brands: int = Field(60, ge=1, le=5000)
    receipts_per_store_day: float = Field(250.0, gt=0, le=100_000, description="mean receipts of a store-day")
    online_orders_per_day: float = Field(400.0, ge=0, le=10_000_000)
    stock_days: float = Field(7.0, gt=0, le=365, description="store stock target, in days of expected sales")
    format: Literal["parquet", "csv"] = Field("parquet", description="output format; same layout either way")
    dims_dir: str | None = Field(None, min_length=1, description="dimensions directory (default: out/dims)")
    facts_dir: str | None = Field(None, min_length=1, description="facts directory (default: out/facts)")
    dictionary_dir: str | None = Field(
        None, min_length=1, description="curated name lists (first_names.csv, last_names.csv, product_brands.csv, geographies.csv)"
    )
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)

    @model_validator(mode="after")
    def _fits(self) -> RetailConfig:
        if self.stores * self.products > 20_000_000:
            raise ValueError(
                f"stores x products = {self.stores * self.products:,} store-product balances is "
                "more than 20,000,000 (the inventory matrix is held in memory)"
            )
        if self.start_date > date(9000, 1, 1) - timedelta(days=self.days):
            raise ValueError(f"start_date {self.start_date} + {self.days} days runs past the calendar")
        return self


# demand by hour of day (0-23): a lunch peak and an after-work peak; cut to store hours per store
HOUR_PROFILE = np.array(
    [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 1.0, 1.2, 1.4, 1.7, 2.2, 1.9, 1.5, 1.5, 1.8, 2.3, 2.4, 2.0, 1.5, 1.0, 0.6, 0.3]
)
# online orders are created 00:00-15:59 so that picking and shipping end the same day (see sales.py)
ONLINE_HOUR_PROFILE = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 0.9, 1.2, 1.4, 1.5, 1.5, 1.6, 1.5, 1.4, 1.3] + [0.0] * 8)
DOW = np.array([0.85, 0.85, 0.9, 0.95, 1.15, 1.35, 1.1])  # Monday .. Sunday


def _thanksgiving(year: int) -> date:
    nov1 = date(year, 11, 1)
    return nov1 + timedelta(days=(3 - nov1.weekday()) % 7 + 21)


def is_closed(day: date) -> bool:
    return day == _thanksgiving(day.year) or (day.month == 12 and day.day == 25)


def day_multiplier(day: date) -> float:
    """Demand of a day relative to an average day (0 when stores are closed)."""
    if is_closed(day):
        return 0.0
    doy = day.timetuple().tm_yday
    season = 1.0 + 0.12 * np.sin(2 * np.pi * (doy - 100) / 365.25)
    holiday = 1.0
    if day.month == 1:
        holiday = 0.85
    elif day.month == 8 or (day.month == 9 and day.day <= 7):
        holiday = 1.15  # back to school
    elif day == _thanksgiving(day.year) + timedelta(days=1):
        holiday = 2.2  # Black Friday
    elif day.month == 12 and day.day < 25:
        holiday = 1.25 + 0.02 * day.day  # the run-up to Christmas
    return float(season * holiday * DOW[day.weekday()])

"""The check record shared by every verification module."""

from __future__ import annotations

from pydantic import BaseModel


class Check(BaseModel):
    name: str
    passed: bool
    detail: str

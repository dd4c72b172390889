"""Errors of the shadow and verification layer, one family so callers can catch by kind."""

from __future__ import annotations


class ShadowError(Exception):
    """Base of every shadow/verification error."""


class ShadowConnectionError(ShadowError):
    """PostgreSQL (or Milvus) could not be reached."""


class ShadowSchemaError(ShadowError):
    """The shadow table does not match the collection schema."""


class SyncError(ShadowError):
    """Mirroring a write into the shadow failed."""


class ShadowValidationError(ShadowError):
    """Input rows do not satisfy the collection schema."""


class CollectionNotFoundError(ShadowError):
    """The collection (or its shadow table) does not exist."""


class TypeMismatchError(ShadowError):
    """A value's type does not fit its field."""


class FilterConversionError(ShadowError):
    """A Milvus boolean expression uses syntax the SQL converter does not support."""

    def __init__(self, message: str, token: str, position: int) -> None:
        super().__init__(f"{message} at position {position}: {token!r}")
        self.token = token
        self.position = position


class TransactionError(ShadowError):
    """A mirrored write was rolled back."""

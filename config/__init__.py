"""Settings (pydantic-settings, nested env with ``__``) and structlog setup, shared by every layer."""

from config.logging import configure_logging
from config.settings import Settings, get_settings

__all__ = ["Settings", "configure_logging", "get_settings"]

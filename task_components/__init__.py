"""Reusable tasks, one package per concern; each package lists its tasks in ``COMPONENTS``."""

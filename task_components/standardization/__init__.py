"""Standardization: field mapping, type conversion and per-field standardizations for streaming records."""

from task_components.standardization.task import Standardize, StandardizeParams, StandardizeStage

__all__ = ["COMPONENTS", "Standardize", "StandardizeParams", "StandardizeStage"]

COMPONENTS = [Standardize]

"""Data quality for streams: named validation rules, duplicate handling and error thresholds."""

from task_components.quality.task import QualityCheck, QualityParams, QualityStage

__all__ = ["COMPONENTS", "QualityCheck", "QualityParams", "QualityStage"]

COMPONENTS = [QualityCheck]

"""Composite components: stand-alone components' pure functions fused into one unit of work per file.

This package sits above the component packages (it composes generation, partitioning, storage and shadow), so
a unit of work can run whole on a worker; no component package imports it.
"""

from task_components.fused.shadow_files import ShadowFiles, ShadowFilesParams
from task_components.fused.task import FusedUploadResult, GenerateUpload, GenerateUploadParams

COMPONENTS = [GenerateUpload, ShadowFiles]

__all__ = ["COMPONENTS", "FusedUploadResult", "GenerateUpload", "GenerateUploadParams", "ShadowFiles", "ShadowFilesParams"]

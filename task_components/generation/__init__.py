"""Vectorized, deterministic synthetic data from collection schemas."""

from task_components.generation.task import ChunkPlan, Generate, GenerateParams, generate_batches

COMPONENTS = [Generate]

__all__ = ["COMPONENTS", "ChunkPlan", "Generate", "GenerateParams", "generate_batches"]

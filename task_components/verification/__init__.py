"""Verification: source files vs Milvus (and the PostgreSQL shadow)."""

from task_components.verification.task import Check, Verify, VerifyParams, VerifyResult

COMPONENTS = [Verify]

__all__ = ["COMPONENTS", "Check", "Verify", "VerifyParams", "VerifyResult"]

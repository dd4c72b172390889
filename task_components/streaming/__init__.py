"""Streaming plumbing shared by the sources, stages and sinks: offsets, retries and breaker, detached stages."""

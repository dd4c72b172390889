"""Streaming sources: the Kafka batch source (the driver of a streaming pipeline) and the test-data producer."""

from task_components.sources.kafka import KafkaSource, KafkaSourceParams
from task_components.sources.produce import ProduceParams, ProduceTestData

__all__ = ["COMPONENTS", "KafkaSource", "KafkaSourceParams", "ProduceParams", "ProduceTestData"]

COMPONENTS = [KafkaSource, ProduceTestData]

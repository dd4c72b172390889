"""Streaming sinks: MongoDB (PyMongo async) and Kafka, the dead-letter topic, retries and the circuit breaker."""

from task_components.sinks.kafka import DeadLetterComponent, KafkaDeadLetterSink, KafkaSink, KafkaSinkComponent
from task_components.sinks.mongo import MongoSink, MongoSinkComponent

__all__ = ["COMPONENTS", "KafkaDeadLetterSink", "KafkaSink", "MongoSink"]

COMPONENTS = [MongoSinkComponent, KafkaSinkComponent, DeadLetterComponent]

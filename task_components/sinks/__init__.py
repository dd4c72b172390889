"""Streaming sinks: MongoDB (PyMongo async), Kafka, Milvus, the dead-letter topic (retries live in streaming/)."""

from task_components.sinks.kafka import DeadLetterComponent, KafkaDeadLetterSink, KafkaSink, KafkaSinkComponent
from task_components.sinks.milvus import MilvusSink, MilvusSinkComponent
from task_components.sinks.mongo import MongoSink, MongoSinkComponent

__all__ = ["COMPONENTS", "KafkaDeadLetterSink", "KafkaSink", "MilvusSink", "MongoSink"]

COMPONENTS = [MongoSinkComponent, KafkaSinkComponent, DeadLetterComponent, MilvusSinkComponent]

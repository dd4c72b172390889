"""``run_pipeline.py daemon``: pipeline runs requested through Kafka, each with exactly one effect.

requests.py checks a request, ledger.py records it once, execution.py runs it, status.py tells its
story, http.py serves /healthz and /metrics, server.py ties them to the consumer group.
"""

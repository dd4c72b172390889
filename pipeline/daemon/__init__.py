"""``run_pipeline.py daemon``: pipeline runs requested through Kafka, each with exactly one effect.

requests.py checks a request, policy.py decides whether this daemon trusts it to run, ledger.py (and
ledger_mongo.py) records it once, intake.py fetches, queues and commits, execution.py runs it, status.py
tells its story, http.py serves /healthz and /metrics, server.py ties them together: the daemon's life,
run slots, leases and shutdown.
"""

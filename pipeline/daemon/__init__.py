"""``run_pipeline.py daemon``: pipeline runs requested through Kafka, each with exactly one effect.

requests.py checks a request, policy.py decides whether this daemon trusts it to run, ledger.py (and
ledger_mongo.py) records it once. The daemon is composed, not inherited: server.py (its life, signals,
run slots, leases, shutdown) builds an intake.py part (fetch, check, record, queue, commit) and an
execution.py part (claim, run, record the outcome) around one state.py ``Board`` of ``Request`` objects;
neither part imports the other or the server. outcome.py types how a request ended, status.py tells its
story, http.py serves /healthz and /metrics.
"""

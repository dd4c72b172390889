"""``run-pipeline serve``: the web console (runs, live run pages, the daemon's ledger, submit and cancel).

A FastAPI app over what the runs already write (report.json, events.jsonl, request.json), so it needs
nothing but a run directory; the daemon's ledger is read when one is configured.
"""

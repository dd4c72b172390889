"""The long-running correctness checker (``shadow ingest`` / ``pymilvus-pg ingest``): writers through the
shadowing client, a validation every few seconds, a live view, a summary. See ``workload``."""

"""``python -m pipeline ...``: the CLI (what the console starts its runs with; ``run-pipeline`` for people)."""

from pipeline.cli import main

main()

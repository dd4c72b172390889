#!/usr/bin/env python3
"""Entry point: ``python run_pipeline.py --help`` (also installed as ``run-pipeline``)."""

from pipeline.cli import main

if __name__ == "__main__":
    main()

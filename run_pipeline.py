#!/usr/bin/env python3
"""Entry point: ``python run_pipeline.py --help`` (also installed as ``run-pipeline``).

The import sits under the guard on purpose: worker processes re-import this file as ``__mp_main__``
and must not pay for loading the whole CLI.
"""

if __name__ == "__main__":
    from pipeline.cli import main

    main()

"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT``.

All the work is in :mod:`nonlocal_plugin.apis`; see ``--help``.
"""
from nonlocal_plugin.apis.cli import test_main

if __name__ == '__main__':
    test_main()

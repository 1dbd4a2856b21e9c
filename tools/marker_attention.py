"""Attention of object queries on the toy tasks' markers:
``python tools/marker_attention.py CONFIG CHECKPOINT [--data-root DIR]``.

All the work is in :mod:`nonlocal_plugin.analysis.markers`; see ``--help``.
"""
from nonlocal_plugin.analysis.cli import markers_main

if __name__ == '__main__':
    markers_main()

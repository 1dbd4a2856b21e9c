"""Attention maps and GCNet's query-independence statistic of a trained
model: ``python tools/analyze_attention.py CONFIG CHECKPOINT IMAGE...``.

All the work is in :mod:`nonlocal_plugin.analysis`; see ``--help``.
"""
from nonlocal_plugin.analysis.cli import attention_main

if __name__ == '__main__':
    attention_main()

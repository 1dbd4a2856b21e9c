"""Params and FLOPs of a config: ``python tools/get_flops.py CONFIG
[--shape H W]``.

All the work is in :mod:`nonlocal_plugin.analysis`; see ``--help``.
"""
from nonlocal_plugin.analysis.cli import flops_main

if __name__ == '__main__':
    flops_main()

"""Run an ablation grid over seeds and collect it into one table:
``python tools/ablate.py configs/ablations/<grid>.py [--dry-run|--collect]``.

All the work is in :mod:`nonlocal_plugin.ablation`; see ``--help``.
"""
import sys

from nonlocal_plugin.ablation.cli import ablate_main

if __name__ == '__main__':
    sys.exit(ablate_main())

"""Train an mmdet or mmseg config: ``python tools/train.py CONFIG``.

All the work is in :mod:`nonlocal_plugin.apis`; see ``--help``.
"""
from nonlocal_plugin.apis.cli import train_main

if __name__ == '__main__':
    train_main()

"""Time and peak memory of the blocks against mmcv's and mmseg's.

Each case (one implementation, one shape, one mode) runs forward + backward
in a process of its own; the script prints a markdown table with ratios to
the peer and checks the package's performance targets. The logic and its
documentation live in :mod:`nonlocal_plugin.benchmark`.

Examples::

    python tools/benchmark.py                      # full grid + model row
    python tools/benchmark.py --quick              # smoke run, seconds
    python tools/benchmark.py --grid res3 --modes embedded_gaussian \\
        --skip-model --out bench.md
    python tools/benchmark.py --strict             # exit 1 unless all pass
"""
import sys

from nonlocal_plugin.benchmark import main

if __name__ == '__main__':
    sys.exit(main())

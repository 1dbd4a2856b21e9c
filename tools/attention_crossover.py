"""Measures where ``attn_impl='auto'`` should stop building the attention map.

Times forward + backward of the softmax attention through the map (the
path ``'auto'`` takes for small maps) and without it (``impl='fused'``)
over the blocks' shapes, and prints the table from which
``nonlocal_plugin.ops.attention.MATERIALISE_ELEMENTS`` was chosen. The logic
lives in :mod:`nonlocal_plugin.benchmark.crossover`.

Examples::

    python tools/attention_crossover.py              # CPU, all threads
    python tools/attention_crossover.py --tiles      # symmetric kernel tiles
    python tools/attention_crossover.py --device cuda
"""
import sys

from nonlocal_plugin.benchmark.crossover import main

if __name__ == '__main__':
    sys.exit(main())

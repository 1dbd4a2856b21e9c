"""Ablation grids: one paper table as data, run and collected as one table.

Behind ``tools/ablate.py``; nothing here is imported by ``import
nonlocal_plugin``. A grid file (``configs/ablations/*.py``, mmengine config
format) lists rows, each a base config plus overrides and the number its
paper published (:mod:`.grid`). :mod:`.jobs` turns rows and seeds into work
dirs and commands, :mod:`.execute` runs them (here or through a cluster
launcher), :mod:`.collect` reads the work dirs back into ``ablation.md`` /
``ablation.csv`` and :mod:`.plot` draws them.

The rows reproduce ablations of "Non-local Neural Networks"
(https://arxiv.org/abs/1711.07971), GCNet
(https://arxiv.org/abs/1904.11492) and DNL
(https://arxiv.org/abs/2006.06668).
"""

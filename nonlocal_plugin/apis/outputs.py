"""``tools/test.py --show-dir`` and ``--out``, as mmdet's and mmseg's own.

Both go through the libraries' machinery, as their ``tools/test.py`` do:

* ``--show-dir DIR`` turns on the config's visualization hook (mmdet's
  ``DetVisualizationHook``, mmseg's ``SegVisualizationHook``), which draws
  the predictions with the config's visualizer. mmdet writes one image per
  test image into DIR; mmseg writes them into ``DIR/vis_data/vis_image``.
  Two differences from the libraries' tools: a relative DIR is taken from
  the working directory, not from ``work_dir/<timestamp>``, so the images
  are where the command said; and mmseg's hook draws every batch
  (``interval=1``), where its default (50) counts from the 50th batch and
  so draws nothing on a test set of fewer batches.
* ``--out FILE`` (``.pkl``) appends a dumping metric to the test evaluator:
  mmdet's ``DumpDetResults`` (as mmdet does) and, for mmseg, mmengine's
  ``DumpResults`` (mmseg's own ``--out`` is a folder for its format-only
  output instead).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import List

from mmengine.config import Config
from mmengine.runner import Runner

from .checks import SetupError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


def check_out(out: str | None) -> None:
    """Refuses an ``--out`` that the dumping metrics would refuse later."""
    if out is not None and not out.endswith(('.pkl', '.pickle')):
        raise SetupError(f'--out must name a .pkl or .pickle file, got '
                         f'{out!r}')


def enable_show_dir(cfg: Config, codebase: str, show_dir: str) -> str:
    """Turns on the config's visualization hook, drawing into ``show_dir``.

    Args:
        cfg (Config): A test config.
        codebase (str): ``'mmdet'`` or ``'mmseg'``.
        show_dir (str): Where the drawn predictions go.

    Returns:
        str: The absolute folder the images are written to.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if not hook:
        raise SetupError(
            "--show-dir needs default_hooks.visualization (mmdet's "
            "DetVisualizationHook or mmseg's SegVisualizationHook, which the "
            "libraries' default_runtime.py sets); the config has none")
    show_dir = osp.abspath(show_dir)
    hook['draw'] = True
    if codebase == 'mmdet':
        hook['test_out_dir'] = show_dir
        return show_dir
    if not cfg.get('visualizer'):
        raise SetupError('--show-dir needs a visualizer in the config')
    cfg.visualizer['save_dir'] = show_dir
    hook['interval'] = 1
    return show_dir


def add_dump(runner: Runner, codebase: str, out: str) -> None:
    """Appends the metric that dumps the raw predictions to ``out``."""
    if codebase == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


def written_images(show_dir: str) -> List[str]:
    """The images under ``show_dir``, sorted."""
    found = []
    for root, _, files in os.walk(show_dir):
        found += [osp.join(root, f) for f in files
                  if f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)

"""What train and test check after the paths and before the launcher.

* :func:`preflight_train`: the data files (:mod:`.data_checks`), the model
  and the checkpoint it resumes from or loads (:mod:`.model_checks`), the
  hooks of an exact resume (:mod:`.resume`), and, in deterministic mode,
  the cuBLAS workspace setting that ``torch.use_deterministic_algorithms``
  needs on CUDA.
* :func:`preflight_test`: the data files, the model and the checkpoint.
"""
from __future__ import annotations

import os
from typing import Sequence

from mmengine.config import Config
from mmengine.logging import print_log

from . import resume
from .data_checks import check_data_files
from .model_checks import check_model

CUBLAS_WORKSPACE = ':4096:8'


def _deterministic_env(cfg: Config) -> None:
    """``CUBLAS_WORKSPACE_CONFIG``, without which deterministic mode raises
    at the first cuBLAS call on CUDA >= 10.2."""
    randomness = cfg.get('randomness') or {}
    if randomness.get('deterministic') and (
            'CUBLAS_WORKSPACE_CONFIG' not in os.environ):
        os.environ['CUBLAS_WORKSPACE_CONFIG'] = CUBLAS_WORKSPACE
        print_log(
            'randomness.deterministic: CUBLAS_WORKSPACE_CONFIG='
            f'{CUBLAS_WORKSPACE} (cuBLAS needs it to be deterministic)',
            logger='current')


def _check_data_files_once(cfg: Config, loaders: Sequence[str]) -> None:
    """The data files are read by one process per machine (``LOCAL_RANK``
    0): parsing COCO train2017 takes seconds and gigabytes, and if it fails
    torchrun stops the other processes."""
    if os.environ.get('LOCAL_RANK', '0') in ('', '0'):
        check_data_files(cfg, loaders)


def preflight_train(cfg: Config, loaders: Sequence[str]) -> None:
    """Checks a training run and enables its exact-resume hooks.

    Args:
        cfg (Config): The run's config, with ``resume`` and ``load_from``
            set; changed in place.
        loaders (Sequence[str]): The dataloaders it reads.

    Raises:
        SetupError: If the data, the model or the checkpoint is wrong.
    """
    _check_data_files_once(cfg, loaders)
    if cfg.get('resume') and cfg.get('load_from'):
        check_model(cfg, checkpoint=cfg.load_from, strict=True,
                    what='--resume',
                    fix='Resume with the config that wrote it')
    else:
        check_model(cfg, checkpoint=cfg.get('load_from'), strict=False,
                    what='load_from',
                    fix='It is a checkpoint of another model: pass one of '
                    'this config\'s model')
    resume.enable(cfg)
    _deterministic_env(cfg)


def preflight_test(cfg: Config, checkpoint: str) -> None:
    """Checks a test run: the data files, the model and ``checkpoint``.

    Raises:
        SetupError: If the data, the model or the checkpoint is wrong.
    """
    _check_data_files_once(cfg, ('test_dataloader', ))
    check_model(cfg, checkpoint=checkpoint, strict=True, what='test',
                fix='Pass a checkpoint that this config trained, or the '
                'config that trained it')

"""Training and testing of mmdet and mmseg configs, chosen by scope.

:func:`train` and :func:`test` do what mmdet's and mmseg's
``tools/train.py`` and ``tools/test.py`` do, for either library: the
config's ``default_scope`` (``'mmdet'`` or ``'mmseg'``) picks the registry
the Runner is built from. Before the Runner is built they

1. build a toy config's dataset if it is missing
   (:func:`~.checks.prepare_toy_data`);
2. check that the data, the pretrained weights and the checkpoints exist or
   can be downloaded (:mod:`.checks`), so that bad input ends in one
   :class:`~.checks.SetupError` message;
3. set up the launcher, with a ``gloo`` process group on CPU
   (:func:`~.dist.setup_launcher`).
"""
from __future__ import annotations

import os.path as osp
import warnings
from importlib import import_module
from typing import Dict

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from .cfg_options import check_cfg_options
from .checks import (
    SetupError,
    check_checkpoints,
    check_data,
    prepare_toy_data,
)
from .dist import setup_launcher
from .outputs import add_dump, check_out, enable_show_dir
from .preflight import preflight_test, preflight_train
from .resume import check_resume_file, choose_checkpoint

CODEBASES = ('mmdet', 'mmseg')

# helper functions


def load_config(path: str, cfg_options: Dict | None = None) -> Config:
    """Reads a config file and applies ``--cfg-options`` overrides.

    Args:
        path (str): The config file.
        cfg_options (dict, optional): ``key=value`` overrides, dotted keys.

    Returns:
        Config: The merged config.
    """
    if not osp.isfile(path):
        raise SetupError(f'config file not found: {path!r}')
    with warnings.catch_warnings():
        # mmengine resolves 'mmdet::' bases through the deprecated
        # pkg_resources, which warns on every run.
        warnings.filterwarnings(
            'ignore', message='pkg_resources is deprecated',
            category=UserWarning)
        cfg = Config.fromfile(path)
    if cfg_options:
        # A key the config lacks is refused unless written +key.
        cfg_options = check_cfg_options(cfg, cfg_options,
                                         cfg.get('default_scope'))
        cfg.merge_from_dict(cfg_options)
    return cfg


def codebase_of(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in CODEBASES:
        raise SetupError(
            f"the config's default_scope is {scope!r}; these tools run "
            f'configs of {CODEBASES}, which inherit it from the library\'s '
            "default_runtime.py (e.g. _base_ = 'mmdet::mask_rcnn/"
            "mask-rcnn_r50_fpn_1x_coco.py')")
    return scope


def build_runner(cfg: Config) -> Runner:
    """A Runner from ``cfg``, through the registry of its codebase."""
    codebase = codebase_of(cfg)
    if codebase == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return import_module(f'{codebase}.registry').RUNNERS.build(cfg)


def _default_work_dir(cfg: Config, config: str,
                      work_dir: str | None) -> None:
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])


def _enable_amp(cfg: Config) -> None:
    if not torch.cuda.is_available():
        raise SetupError(
            '--amp needs a CUDA GPU: mmengine\'s AmpOptimWrapper runs '
            'torch.cuda.amp, and this machine has no GPU; leave out --amp')
    optim_wrapper = cfg.get('optim_wrapper')
    if not optim_wrapper:
        raise SetupError('--amp needs an optim_wrapper in the config')
    if optim_wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper',
                                                         'AmpOptimWrapper'):
        raise SetupError(
            f"--amp replaces optim_wrapper.type 'OptimWrapper' by "
            f"'AmpOptimWrapper', but the config has {optim_wrapper.type!r}")
    optim_wrapper.type = 'AmpOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def _set_resume(cfg: Config, resume: str | None) -> None:
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':  # the newest complete checkpoint, if any
        cfg.load_from = choose_checkpoint(cfg.work_dir)
        cfg.resume = cfg.load_from is not None
        return
    check_resume_file(resume)
    cfg.load_from = resume


def _set_cpu_threads(cfg: Config) -> None:
    """Applies the config's ``torch_threads`` on a machine without CUDA.

    Small models on a shared CPU run faster and far more steadily with one
    thread: with more, OpenMP threads spin against other processes.
    """
    threads = cfg.get('torch_threads')
    if threads and not torch.cuda.is_available():
        torch.set_num_threads(int(threads))


def _training_loaders(cfg: Config) -> tuple:
    """The dataloaders a training run reads."""
    loaders = ('train_dataloader', )
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders += ('val_dataloader', )
    return loaders


# main functions


def prepare_train(config: str,
                  *,
                  work_dir: str | None = None,
                  resume: str | None = None,
                  amp: bool = False,
                  launcher: str = 'none',
                  cfg_options: Dict | None = None) -> Config:
    """The checked config of a training run, with the launcher set up.

    Args:
        config (str): The config file.
        work_dir (str, optional): Where logs and checkpoints go. Default:
            the config's, else ``./work_dirs/<config name>``.
        resume (str, optional): ``'auto'`` to resume from the latest
            checkpoint in ``work_dir``, or a checkpoint to resume from.
        amp (bool): Mixed precision (needs CUDA). Default: False.
        launcher (str): ``'none'``, ``'pytorch'`` or ``'slurm'``.
        cfg_options (dict, optional): Config overrides.

    Returns:
        Config: Ready for :func:`build_runner`.

    Raises:
        SetupError: If the run cannot start; the message says why.
    """
    cfg = load_config(config, cfg_options)
    codebase_of(cfg)
    _default_work_dir(cfg, config, work_dir)
    _set_resume(cfg, resume)
    if amp:
        _enable_amp(cfg)
    _set_cpu_threads(cfg)
    prepare_toy_data(cfg)
    check_data(cfg, _training_loaders(cfg))
    check_checkpoints(cfg, pretrained=True)
    preflight_train(cfg, _training_loaders(cfg))
    setup_launcher(cfg, launcher)
    return cfg


def prepare_test(config: str,
                 checkpoint: str,
                 *,
                 work_dir: str | None = None,
                 launcher: str = 'none',
                 cfg_options: Dict | None = None,
                 show_dir: str | None = None) -> Config:
    """The checked config of a test run; see :func:`prepare_train`.

    Args:
        config (str): The config file.
        checkpoint (str): The trained weights (a file or a URL).
        work_dir (str, optional): Where logs go.
        launcher (str): ``'none'``, ``'pytorch'`` or ``'slurm'``.
        cfg_options (dict, optional): Config overrides.
        show_dir (str, optional): Draw the predictions into this folder
            through the config's visualization hook (:mod:`.outputs`).

    Returns:
        Config: Ready for :func:`build_runner`.
    """
    cfg = load_config(config, cfg_options)
    codebase_of(cfg)
    _default_work_dir(cfg, config, work_dir)
    cfg.load_from = checkpoint
    cfg.resume = False
    if show_dir is not None:
        enable_show_dir(cfg, codebase_of(cfg), show_dir)
    _set_cpu_threads(cfg)
    prepare_toy_data(cfg)
    check_data(cfg, ('test_dataloader', ))
    check_checkpoints(cfg, pretrained=False)
    preflight_test(cfg, checkpoint)
    setup_launcher(cfg, launcher)
    return cfg


def train(config: str, **options) -> Runner:
    """Trains (and validates) ``config``; returns the finished Runner.

    Args:
        config (str): The config file.
        **options: :func:`prepare_train`'s options.
    """
    runner = build_runner(prepare_train(config, **options))
    runner.train()
    return runner


def test(config: str, checkpoint: str, *, out: str | None = None,
         **options) -> Dict[str, float]:
    """Evaluates ``checkpoint`` on the config's test set; the metrics.

    Args:
        config (str): The config file.
        checkpoint (str): The trained weights.
        out (str, optional): Also dump the raw predictions to this ``.pkl``
            (:func:`~.outputs.add_dump`).
        **options: :func:`prepare_test`'s options.
    """
    check_out(out)
    cfg = prepare_test(config, checkpoint, **options)
    runner = build_runner(cfg)
    if out is not None:
        add_dump(runner, codebase_of(cfg), out)
    return runner.test()


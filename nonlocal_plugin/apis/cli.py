"""The command lines behind ``tools/train.py`` and ``tools/test.py``.

Each parses its arguments, runs :func:`~.run.train` or :func:`~.run.test`
and turns a :class:`~.checks.SetupError` into one line on stderr and exit
status 1, without a traceback.
"""
from __future__ import annotations

import argparse
import os
from typing import List

from mmengine.config import DictAction

from ..backbones import MissingLibraryError
from .checks import SetupError
from .dist import LAUNCHERS, release_process_group
from .interrupts import one_line_stop
from .outputs import written_images
from .run import test, train

# helper functions


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--work-dir', help='where logs and checkpoints go (default: '
        './work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config entries, e.g. '
        'train_dataloader.batch_size=4 model.backbone.init_cfg=None')
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher: none (one process), pytorch (torchrun, see '
        'tools/dist_train.sh) or slurm (srun); on CPU the processes talk '
        'through gloo')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument(
        '--local-rank', '--local_rank', type=int, default=0,
        help=argparse.SUPPRESS)


def _set_local_rank(args: argparse.Namespace) -> None:
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


def train_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/train.py``."""
    parser = argparse.ArgumentParser(
        description='Train an mmdet or mmseg config (chosen by its '
        'default_scope) with the nonlocal_plugin blocks.')
    parser.add_argument('config', help='the config file')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        metavar='CHECKPOINT',
        help='resume from CHECKPOINT, or without it from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (needs a CUDA GPU)')
    _common(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/test.py``."""
    parser = argparse.ArgumentParser(
        description='Evaluate a checkpoint of an mmdet or mmseg config '
        '(chosen by its default_scope).')
    parser.add_argument('config', help='the config file')
    parser.add_argument('checkpoint', help='the checkpoint file')
    parser.add_argument(
        '--show-dir', metavar='DIR',
        help="draw the predictions into DIR with the config's visualization "
        "hook, one image per test image (mmseg: under "
        "DIR/vis_data/vis_image)")
    parser.add_argument(
        '--out', metavar='FILE',
        help='also dump the raw predictions to FILE (.pkl)')
    _common(parser)
    return parser


# main functions


def train_main(argv: List[str] | None = None) -> None:
    """``tools/train.py``: trains the config given on the command line."""
    args = train_parser().parse_args(argv)
    _set_local_rank(args)
    try:
        with one_line_stop():  # SIGTERM, a lost peer: one line too
            train(args.config, work_dir=args.work_dir, resume=args.resume,
                  amp=args.amp, launcher=args.launcher,
                  cfg_options=args.cfg_options)
            release_process_group()
    except (SetupError, MissingLibraryError) as err:
        raise SystemExit(f'error: {err}') from None


def test_main(argv: List[str] | None = None) -> None:
    """``tools/test.py``: evaluates a checkpoint of the given config."""
    args = test_parser().parse_args(argv)
    _set_local_rank(args)
    try:
        with one_line_stop():
            test(args.config, args.checkpoint, work_dir=args.work_dir,
                 launcher=args.launcher, cfg_options=args.cfg_options,
                 show_dir=args.show_dir, out=args.out)
            release_process_group()
    except (SetupError, MissingLibraryError) as err:
        raise SystemExit(f'error: {err}') from None
    if args.show_dir is not None:
        images = written_images(args.show_dir)
        print(f'{len(images)} prediction images written to '
              f'{os.path.abspath(args.show_dir)}')
    if args.out is not None:
        print(f'predictions dumped to {args.out}')

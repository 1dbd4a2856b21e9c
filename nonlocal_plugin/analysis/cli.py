"""The command lines behind ``tools/get_flops.py`` and
``tools/analyze_attention.py``."""
from __future__ import annotations

import argparse
from typing import List

from ..apis.checks import SetupError
from ..backbones import MissingLibraryError

# get_flops


def flops_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/get_flops.py``."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Params and FLOPs of a config\'s model at one input '
        'size, whole and per attention block, counted by mmengine\'s '
        'FlopAnalyzer with handles for fused attention (SDPA), the '
        'package\'s chunked kernels, softmax, means and pooling. One '
        'multiply-add counts as one flop (mmengine\'s convention).')
    parser.add_argument('config', help='an mmdet or mmseg config file')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=[800, 1333],
        metavar=('H', 'W'),
        help='input height and width before the config\'s padding '
        '(default: 800 1333)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries')
    return parser


def flops_main(argv: List[str] | None = None) -> None:
    """``tools/get_flops.py``."""
    args = flops_parser().parse_args(argv)
    from .complexity import complexity, format_complexity
    try:
        result = complexity(args.config, args.shape, args.cfg_options)
    except (SetupError, MissingLibraryError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    print(format_complexity(result))


# analyze_attention


def attention_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/analyze_attention.py``."""
    from mmengine.config import DictAction

    from .attention_report import STATISTIC
    parser = argparse.ArgumentParser(
        description='Attention maps of every NL, DNL and GC block of a '
        'trained mmdet or mmseg model at chosen query points: PNG overlays '
        '(one row per block; GC: its one map; DNL: pairwise and unary '
        'parts) and, per block, GCNet\'s query-independence statistic. '
        'Images go in at their own size. The statistic: ' + STATISTIC)
    parser.add_argument('config', help='an mmdet or mmseg config file')
    parser.add_argument('checkpoint', help='the trained weights')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image files')
    parser.add_argument(
        '--queries', nargs='+', metavar='X,Y',
        help='query points in image pixels (default: the centres of a '
        '--grid of cells)')
    parser.add_argument(
        '--grid', type=int, nargs=2, default=[3, 3], metavar=('ROWS', 'COLS'),
        help='the default queries: a ROWS x COLS grid (default: 3 3)')
    parser.add_argument(
        '--out', metavar='DIR',
        help='write <image>_attention.png and statistics.json here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries')
    return parser


def attention_main(argv: List[str] | None = None) -> None:
    """``tools/analyze_attention.py``."""
    args = attention_parser().parse_args(argv)
    from .attention_report import (
        analyze_attention,
        format_summaries,
        parse_points,
    )
    try:
        points = (parse_points(args.queries)
                  if args.queries is not None else None)
        summaries = analyze_attention(
            args.config, args.checkpoint, args.images, points=points,
            grid=tuple(args.grid), out=args.out,
            cfg_options=args.cfg_options)
    except (SetupError, MissingLibraryError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    print(format_summaries(summaries))
    if args.out is not None:
        print(f'overlays and statistics.json written to {args.out}')


# marker_attention


def markers_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/marker_attention.py``."""
    parser = argparse.ArgumentParser(
        description='On a toy COCO task: for every val object (its box '
        'centre as the query), the share of each block\'s attention on the '
        'coloured markers (legend markers or cue bar), and of that the share '
        'on the marker of the object\'s class (chance: 1/3 on the matching '
        'task). NL/DNL pairwise rows and unary maps are reported apart.')
    parser.add_argument('config', help='a toy mmdet config with blocks')
    parser.add_argument('checkpoint', help='the trained weights')
    parser.add_argument(
        '--data-root', default='data/toy_coco_matching',
        help='the toy dataset (default: data/toy_coco_matching)')
    return parser


def markers_main(argv: List[str] | None = None) -> None:
    """``tools/marker_attention.py``."""
    args = markers_parser().parse_args(argv)
    from .markers import marker_attention
    try:
        found = marker_attention(args.config, args.checkpoint,
                                 args.data_root)
    except (SetupError, MissingLibraryError, ValueError,
            FileNotFoundError) as err:
        raise SystemExit(f'error: {err}') from None
    for name, record in found.items():
        print(f"{name} ({record['kind']}), {record['objects']} objects")
        for part in ('pairwise', 'unary'):
            if part in record:
                print(f"  {part}: {record[part]['mass']:.3f} of the row on "
                      f"the markers, {record[part]['own']:.3f} of that on "
                      "the object's own marker")

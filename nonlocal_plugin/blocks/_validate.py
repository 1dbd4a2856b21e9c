"""Argument checks shared by the block constructors.

numpy integers, floats and booleans are accepted where Python's are (a
config computed with numpy often holds them) and come back as Python
values.
"""
import numbers
from typing import Any, Iterable

import numpy as np
from torch import Tensor

_BOOLS = (bool, np.bool_)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, _BOOLS) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be a positive int, got {value!r} '
                        f'({type(value).__name__})')
    if value <= 0:
        raise ValueError(f'{name} must be a positive int, got {value}')
    return int(value)


def check_positive_number(name: str, value: Any) -> float:
    if isinstance(value, _BOOLS) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a positive number, got {value!r}')
    if not value > 0:
        raise ValueError(f'{name} must be a positive number, got {value}')
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, _BOOLS):
        raise TypeError(f'{name} must be a bool, got {value!r}')
    return bool(value)


def check_input(block: str, x: Any, channels: int, layout: str) -> None:
    """Raises unless ``x`` is laid out as ``layout`` with ``channels``.

    Args:
        block (str): The block's name, for the message.
        x: The input.
        channels (int): The channel count the block was built for.
        layout (str): The expected dims, e.g. ``'N, C, H, W'``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f'{block} expects a Tensor, got {type(x).__name__}')
    rank = layout.count(',') + 1
    if x.dim() != rank:
        raise ValueError(f'{block} expects a {rank}-D input [{layout}], got '
                         f'shape {tuple(x.shape)}')
    if x.shape[1] != channels:
        raise ValueError(f'{block} was built for in_channels={channels}, got '
                         f'an input with {x.shape[1]} channels (shape '
                         f'{tuple(x.shape)})')

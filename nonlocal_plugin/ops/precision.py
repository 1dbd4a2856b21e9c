"""The precision policy shared by the kernels."""
import torch
from torch import Tensor


def accumulation_dtype(tensor: Tensor) -> torch.dtype:
    """fp32, or fp64 for fp64 inputs: what the kernels compute and return."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def no_autocast(tensor: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``tensor``'s device."""
    return torch.autocast(tensor.device.type, enabled=False)

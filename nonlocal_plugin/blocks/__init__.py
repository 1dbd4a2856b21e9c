"""The blocks, one family per module."""
from .context_block import ContextBlock
from .disentangled_non_local import DisentangledNonLocal
from .non_local import NonLocal1D, NonLocal2D, NonLocal3D, NonLocalNd

__all__ = [
    'ContextBlock', 'DisentangledNonLocal', 'NonLocal1D', 'NonLocal2D',
    'NonLocal3D', 'NonLocalNd'
]

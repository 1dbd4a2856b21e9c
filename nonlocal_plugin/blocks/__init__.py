"""The blocks, one family per module."""
from .context_block import ContextBlock, SimplifiedNonLocal2D
from .disentangled_non_local import DisentangledNonLocal
from .dnl_detection import DisentangledNonLocalDet2D
from .non_local import NonLocal1D, NonLocal2D, NonLocal3D, NonLocalNd

__all__ = [
    'ContextBlock', 'DisentangledNonLocal', 'DisentangledNonLocalDet2D',
    'NonLocal1D', 'NonLocal2D', 'NonLocal3D', 'NonLocalNd',
    'SimplifiedNonLocal2D'
]

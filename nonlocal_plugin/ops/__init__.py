"""Plain functions holding the math shared by the blocks, and the
synchronised batch norm that the tools use for multi-process CPU jobs."""
from .attention import (
    ATTN_IMPLS,
    dot_product_attention,
    pairwise_attention,
    softmax_attention,
    softmax_pool,
)
from .concatenation import concatenation_attention
from .precision import accumulation_dtype, no_autocast
from .sync_bn import GlooSyncBatchNorm

__all__ = [
    'ATTN_IMPLS', 'GlooSyncBatchNorm', 'accumulation_dtype',
    'concatenation_attention', 'dot_product_attention', 'no_autocast',
    'pairwise_attention', 'softmax_attention', 'softmax_pool'
]

"""Plain functions holding the math shared by the blocks, and the
synchronised batch norm that the tools use for multi-process CPU jobs."""
from .attention import (
    ATTN_IMPLS,
    dot_product_attention,
    pairwise_attention,
    softmax_attention,
    softmax_pool,
)
from .chunked import chunked_softmax_attention
from .concatenation import concatenation_attention
from .materialised import materialised_softmax_attention
from .precision import accumulation_dtype, no_autocast
from .rows import (
    attention_rows,
    attention_rows_reference,
    cosine_distance_mean,
)
from .sdpa import backend_table, fused_backend
from .symmetric import symmetric_softmax_attention
from .sync_bn import GlooSyncBatchNorm

__all__ = [
    'ATTN_IMPLS', 'GlooSyncBatchNorm', 'accumulation_dtype',
    'attention_rows', 'attention_rows_reference', 'cosine_distance_mean',
    'backend_table', 'chunked_softmax_attention', 'concatenation_attention',
    'dot_product_attention', 'fused_backend', 'materialised_softmax_attention',
    'no_autocast', 'pairwise_attention', 'softmax_attention', 'softmax_pool',
    'symmetric_softmax_attention'
]

"""Benchmark of the blocks against their OpenMMLab peers.

``tools/benchmark.py`` is the command line; the logic lives in this package
so that it can be imported and tested (``tests/test_benchmark.py``):
:mod:`.settings` (grid, sizes, targets), :mod:`.memory` (machine and peak
memory), :mod:`.worker` (one measurement, inside its own process),
:mod:`.runner` (the isolated processes), :mod:`.report` (tables and target
checks) and :mod:`.cli`. It prints markdown
tables of median time and peak extra memory, with ratios to the peer
(ours / peer, so lower is better), for:

* :class:`~nonlocal_plugin.NonLocal2D` (``attn_impl='auto'``, its
  default) against mmcv's ``NonLocal2d`` in every pairwise mode;
* :class:`~nonlocal_plugin.DisentangledNonLocal` against mmseg's
  ``DisentangledNonLocal2d`` (``embedded_gaussian``, temperature 0.05);
* one train step of Mask R-CNN R50-FPN with one NL block in res4 (after the
  last-but-one residual block, as in the NL paper), built with this
  package's block against the same model with mmcv's block in that slot;
* the rate of the fused softmax attention kernel against ``torch.mm``,

and checks the targets of :data:`TARGETS` against the measured numbers.

How it measures:

* **Isolation.** Every measurement (one implementation, one shape, one mode)
  runs in a process of its own, forked from a ``forkserver`` that has
  imported the libraries but run no operator (or spawned, with
  ``--start-method spawn``). No case inherits another's heap, caches or
  thread pool, and a case that crashes takes only its own process down.
* **Time.** One warm-up step, then the median wall time of ``--repeats``
  steps. A block step is forward plus backward of a fixed upstream gradient
  with the input requiring grad; parameter and input gradients are reset to
  None before each step, so every step allocates them afresh. torch runs
  with one thread per usable core unless ``--threads`` says otherwise.
* **Peak extra memory (CPU).** Before each timed step the worker collects
  garbage, hands glibc's free heap back to the kernel (``malloc_trim(0)``)
  and resets the kernel's resident-set high-water mark ``VmHWM`` to the
  current resident set by writing ``5`` to ``/proc/self/clear_refs``. After
  the step, ``VmHWM`` minus the resident set before the step is the peak
  extra memory. The kernel raises ``VmHWM`` as it maps each page, so no
  short-lived peak is missed (as sampling can) and, unlike ``ru_maxrss``,
  the imports and set-up are not counted. Only pages actually touched count,
  which is what the machine has to provide. Where ``clear_refs`` is not
  writable, the resident set is sampled every millisecond instead; the
  header says which method ran. The largest peak of the timed steps is
  reported.
* **Peak extra memory (CUDA).** ``max_memory_allocated`` after the step,
  minus ``memory_allocated`` before it, after ``reset_peak_memory_stats``.
* **Precision.** fp32; ``--amp fp16`` or ``--amp bf16`` runs the block and
  model forwards under ``torch.autocast`` of that dtype (the backward
  outside it, as AMP training does). The rate rows stay fp32.
* **Memory cap.** A peer case whose pairwise tensors alone
  (:func:`peer_pairwise_bytes`) exceed ``--mem-cap-gb`` is reported as
  ``OOM/skipped (needs ~X GB)`` without being run. Every CPU worker also
  limits its address space (``RLIMIT_AS``) to its size at start plus the
  cap, so an underestimated case fails with an allocation error, reported
  as ``failed``, instead of exhausting the shared machine.
* **FLOPs.** ``torch.mm`` of two ``n x n`` matrices: ``2 n^3``. Softmax
  attention of ``N`` queries, ``M`` keys and head dim ``d``: ``4 N M d`` for
  the forward (two products); the backward is counted as 2.5 times the
  forward (five products, as the flash backward recomputes the logits), so
  forward plus backward is 3.5 times the forward. This is FlashAttention's
  convention; the output states it.
"""

from .cli import build_parser, main
from .memory import PeakMemory, cpu_memory_method, usable_cores
from .report import Report, check_targets, render
from .runner import Runner, measure_or_skip, run_isolated
from .settings import (
    BLOCKS,
    GB,
    GRID,
    MB,
    NL_MODES,
    RES3_ATTENTION,
    TARGETS,
)
from .worker import attention_flops, peer_pairwise_bytes, run_spec

__all__ = [
    'BLOCKS', 'GB', 'GRID', 'MB', 'NL_MODES', 'PeakMemory', 'RES3_ATTENTION',
    'Report', 'Runner', 'TARGETS', 'attention_flops', 'build_parser',
    'check_targets', 'cpu_memory_method', 'main', 'measure_or_skip',
    'peer_pairwise_bytes', 'render', 'run_isolated', 'run_spec',
    'usable_cores'
]

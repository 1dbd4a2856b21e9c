"""Where building the attention map stops paying: the ``'auto'`` crossover.

``tools/attention_crossover.py`` is the command line. For each shape it
times forward + backward of the two paths ``attn_impl='auto'`` chooses
between, in this process: the map
(:func:`~nonlocal_plugin.ops.materialised.materialised_softmax_attention`)
and ``impl='fused'`` (whichever fused kernel the dispatcher picks for that
shape), and reports the largest ``N * M`` at which the map was faster at
every shape up to it.
:data:`nonlocal_plugin.ops.attention.MATERIALISE_ELEMENTS` records what
was chosen from these tables.

``--tiles`` times the symmetric kernel (:mod:`nonlocal_plugin.ops.symmetric`)
at several tile sizes instead; ``--kernels`` times every softmax kernel,
forced, at the blocks' res4 and res3 shapes, in fp32 and fp16, with their
peak extra memory.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Sequence, Tuple

# (queries = keys?, N, M, Cq, Cv): the blocks' shapes around the crossover.
# Cq = Cv: embedded_gaussian and DNL; Cq = 2 Cv: gaussian (the input is the
# query and key, the value has C / 2 channels); M = N / 4: sub-sampled.
SIZES = (256, 512, 724, 1024, 1448, 2048)
WIDTHS = ((64, 64), (128, 128), (256, 256), (256, 128), (512, 256))
TILES = (1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 22)


def _median_time(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step(impl: str, shared: bool, queries: int, keys: int, qk: int, v: int,
          device: str) -> Callable[[], None]:
    import torch

    from nonlocal_plugin.ops import softmax_attention
    from nonlocal_plugin.ops.materialised import materialised_softmax_attention
    gen = torch.Generator().manual_seed(0)
    # Scaled so that the logits have unit variance, as in the blocks.
    q = (torch.randn(1, queries, qk, generator=gen) * qk**-0.25).to(device)
    k = q if shared else (torch.randn(1, keys, qk, generator=gen) *
                          qk**-0.25).to(device)
    val = torch.randn(1, keys, v, generator=gen).to(device)
    leaves = (q, val) if shared else (q, k, val)
    for t in leaves:
        t.requires_grad_(True)
    grad = torch.randn(1, queries, v, generator=gen).to(device)

    def step() -> None:
        for t in leaves:
            t.grad = None
        if impl == 'map':
            out = materialised_softmax_attention(q, k, val, 1.0)
        else:
            out = softmax_attention(q, k, val, impl=impl)
        out.backward(grad)
        if device == 'cuda':
            torch.cuda.synchronize()

    return step


def shapes(sizes: Sequence[int] = SIZES,
           widths: Sequence[Tuple[int, int]] = WIDTHS):
    """``(shared, N, M, Cq, Cv)`` for every measured case.

    ``shared``: the queries are the keys (gaussian without sub-sampling).
    """
    for n in sizes:
        for qk, v in widths:
            gaussian = qk == 2 * v
            yield (gaussian, n, n, qk, v)
            yield (False, n, n // 4, qk, v)


def measure(device: str = 'cpu', repeats: int = 5,
            sizes: Sequence[int] = SIZES) -> List[tuple]:
    """``(shared, N, M, Cq, Cv, map s, fused s)`` per shape."""
    rows = []
    for shared, n, m, qk, v in shapes(sizes):
        ref, fused = (_median_time(_step(impl, shared, n, m, qk, v, device),
                                   repeats)
                      for impl in ('map', 'fused'))
        rows.append((shared, n, m, qk, v, ref, fused))
        print(f'[crossover] N={n} M={m} Cq={qk} Cv={v} shared={shared}: '
              f'map {ref * 1e3:.2f} ms, fused {fused * 1e3:.2f} ms',
              flush=True)
    return rows


def crossover(rows: Sequence[tuple]) -> int:
    """The largest ``N * M`` up to which the map won everywhere (0 when it
    lost at the smallest)."""
    limit = 0
    for elements in sorted({n * m for _, n, m, *_ in rows}):
        at = [r for r in rows if r[1] * r[2] == elements]
        if any(ref > fused for *_, ref, fused in at):
            break
        limit = elements
    return limit


def tile_times(device: str = 'cpu', repeats: int = 3,
               tiles: Sequence[int] = TILES) -> List[tuple]:
    """``(N, C, Cv, tile elements, s)``: the symmetric kernel per tile."""
    from nonlocal_plugin.ops import symmetric
    rows = []
    for n, qk, v in ((4096, 512, 256), (4200, 1024, 512)):
        for tile in tiles:
            symmetric.TILE_ELEMENTS = tile
            seconds = _median_time(
                _step('fused', True, n, n, qk, v, device), repeats)
            rows.append((n, qk, v, tile, seconds))
            print(f'[tiles] N={n} C={qk} Cv={v} tile={tile}: '
                  f'{seconds * 1e3:.1f} ms', flush=True)
    return rows


# (name, queries are keys, N, Cq, Cv): the blocks' res4 and res3 shapes.
KERNEL_SHAPES = (
    ('res4 gaussian', True, 4200, 1024, 512),
    ('res4 embedded', False, 4200, 512, 512),
    ('res3 gaussian', True, 16800, 512, 256),
    ('res3 embedded', False, 16800, 256, 256),
)


def _kernels(shared: bool):
    from nonlocal_plugin.ops import attention, chunked, symmetric
    kernels = {
        'reference': attention._reference_softmax,
        'fused': attention._fused_softmax,
        'chunked': lambda q, k, v, s: chunked.chunked_softmax_attention(
            q.float(), k.float(), v.float(), s),
    }
    if shared:
        kernels['symmetric'] = lambda q, k, v, s: (
            symmetric.symmetric_softmax_attention(q.float(), v.float(), s))
    return kernels


def _kernel_step(fn, inputs, grad) -> Callable[[], None]:
    import torch

    def step() -> None:
        for t in inputs:
            t.grad = None
        fn(*inputs, 1.0).float().backward(grad)
        if grad.is_cuda:
            torch.cuda.synchronize()

    return step


def kernel_times(device: str = 'cpu', repeats: int = 3) -> List[tuple]:
    """``(shape, dtype, kernel, s, peak extra bytes)``: each kernel forced."""
    import torch

    from .memory import PeakMemory
    rows = []
    for name, shared, n, qk, v in KERNEL_SHAPES:
        for dtype in (torch.float32, torch.float16):
            gen = torch.Generator().manual_seed(0)
            q = (torch.randn(1, n, qk, generator=gen) * qk**-0.25).to(
                device, dtype).requires_grad_(True)
            k = q if shared else (torch.randn(1, n, qk, generator=gen) *
                                  qk**-0.25).to(device,
                                                dtype).requires_grad_(True)
            val = torch.randn(1, n, v, generator=gen).to(
                device, dtype).requires_grad_(True)
            grad = torch.randn(1, n, v, generator=gen).to(device)
            for kernel, fn in _kernels(shared).items():
                step = _kernel_step(fn, (q, k, val), grad)
                try:
                    seconds = _median_time(step, repeats)
                    with PeakMemory(device) as peak:
                        step()
                    extra = peak.extra
                except RuntimeError as err:  # an OOM, reported as such
                    seconds, extra = float('nan'), str(err).split('\n')[0]
                rows.append((name, str(dtype)[6:], kernel, seconds, extra))
                print(f'[kernels] {name} {dtype} {kernel}: {seconds * 1e3:.2f}'
                      ' ms', flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/attention_crossover.py``."""
    import torch

    from .memory import cpu_model
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--sizes', type=int, nargs='+', default=list(SIZES))
    parser.add_argument('--tiles', action='store_true',
                        help='time the symmetric kernel per tile size')
    parser.add_argument('--kernels', action='store_true',
                        help='time every kernel, forced, at res4 and res3')
    args = parser.parse_args(argv)
    where = (torch.cuda.get_device_name() if args.device == 'cuda' else
             f'{cpu_model()}, {torch.get_num_threads()} threads')
    print(f'# {where}, torch {torch.__version__}, fp32, forward + backward, '
          f'median of {args.repeats}\n')
    if args.kernels:
        print('| shape | dtype | kernel | ms | peak extra MB |\n'
              '|---|---|---|---|---|')
        for name, dtype, kernel, seconds, extra in kernel_times(
                args.device, args.repeats):
            memory = (f'{extra / 1e6:.0f}' if isinstance(extra, int) else
                      extra[:60])
            print(f'| {name} | {dtype} | {kernel} | {seconds * 1e3:.2f} | '
                  f'{memory} |')
        return 0
    if args.tiles:
        print('| N | C | Cv | tile elements | ms |\n|---|---|---|---|---|')
        for n, qk, v, tile, seconds in tile_times(args.device, args.repeats):
            print(f'| {n} | {qk} | {v} | {tile} | {seconds * 1e3:.1f} |')
        return 0
    rows = measure(args.device, args.repeats, args.sizes)
    print('| N | M | N*M | Cq | Cv | queries are keys | map ms | '
          'fused ms | map / fused |\n|---|---|---|---|---|---|---|---|---|')
    for shared, n, m, qk, v, ref, fused in rows:
        print(f'| {n} | {m} | {n * m} | {qk} | {v} | {shared} | '
              f'{ref * 1e3:.2f} | {fused * 1e3:.2f} | {ref / fused:.2f} |')
    print(f'\nThe map was faster at every shape up to N*M = {crossover(rows)}')
    return 0

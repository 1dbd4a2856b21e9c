import math
import warnings

import pytest
import torch

#: Headroom of :func:`tolerance` over its first-order rounding model.
SAFETY = 2.0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(actual, expected):
    """Relative error of ``actual`` in the norm of ``expected``."""
    actual, expected = actual.double(), expected.double()
    scale = expected.norm().clamp_min(1e-30)
    return ((actual - expected).norm() / scale).item()


def accumulation_dtype(dtype):
    """The dtype sums run in: fp64 for fp64, fp32 otherwise.

    torch's CPU kernels (matmul, conv, reductions) accumulate fp16 and bf16
    in fp32, and the attention kernels of this package do so explicitly.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def tolerance(dtype, terms=1, *, roundings=1.0):
    """Relative tolerance between two computations of the same values.

    ``rtol = SAFETY * (roundings * eps(dtype) + sqrt(terms) * eps(acc))``

    where ``eps`` is ``torch.finfo(...).eps`` and ``acc`` is
    :func:`accumulation_dtype` of ``dtype``. Derivation, with the unit
    roundoff ``u = eps / 2`` (Higham, *Accuracy and Stability of Numerical
    Algorithms*, ch. 2-3):

    * Storing a value in ``dtype`` rounds it with relative error at most
      ``u``. Two computations that may round the same value to neighbouring
      representable numbers differ by up to ``2u = eps`` relative. Such
      steps in sequence add to first order: ``roundings * eps(dtype)``.
      (When one side is exact, e.g. an fp32 reference for an autocast run,
      each of its roundings counts one half.)
    * A sum of ``K = terms`` products accumulated in ``acc`` carries a
      rounding error that grows like ``sqrt(K) * u(acc)`` relative to the
      sum of the magnitudes (the probabilistic bound of Higham and Mary,
      SIAM J. Sci. Comput. 2019; the worst case ``K * u`` needs every error
      to have the same sign). Two paths that sum in different orders (a
      flash kernel against an explicit ``[N, M]`` map) differ by up to twice
      that: ``sqrt(K) * eps(acc)``. For nested sums (a weight gradient sums
      over the ``B * N`` queries, each of which sums over ``M`` keys) ``K``
      is the product of their lengths. That over-counts (first-order errors
      of nested sums add), which leaves room for the softmax, which
      multiplies a logit's absolute error into a relative one of its
      probability, and so amplifies by the size of the logits (tens of
      units at DNL's temperature of 0.05).
    * ``SAFETY = 2`` leaves room for an unlucky draw and for kernels that
      differ between CPUs (AVX2, AVX-512, AMX, ARM) and torch releases.

    In fp32 the sum term dominates (``eps = 1.2e-7``: ``5.7e-5`` at
    ``K = 2 * 168 * 168``); in fp16 and bf16 the rounding term does,
    since the sums run in fp32 (bf16 ``eps = 7.8e-3``: ``1.6e-2``).
    Over 20 seeds on an Intel Xeon (torch 2.13 and 2.1) the fused-vs-
    reference errors of the blocks and kernels stay under 0.3 of this
    bound; a 5% error of the fused softmax in bf16, or 1e-4 in fp32, in
    its forward or its gradient, exceeds it.

    Args:
        dtype (torch.dtype): The dtype the compared values are stored in.
        terms (int): ``K``, the number of terms summed into one value.
        roundings (float): Roundings to ``dtype`` along the computation.

    Returns:
        float: The relative tolerance.
    """
    eps = torch.finfo(dtype).eps
    eps_acc = torch.finfo(accumulation_dtype(dtype)).eps
    return SAFETY * (roundings * eps + math.sqrt(terms) * eps_acc)


def assert_close_scaled(actual, expected, rtol):
    """``assert_close`` with ``atol = rtol * max|expected|``.

    Rounding errors scale with the magnitudes that were summed, not with
    each element, so an element that comes out near zero by cancellation
    is held to the tensor's scale rather than to its own.
    """
    atol = rtol * expected.detach().abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def exactly_zero_grads(block):
    """Names of the parameters whose gradient is zero in exact arithmetic.

    * A softmax is shift invariant, so a bias that adds the same value to
      every logit of a row has no effect on the output: the key (``phi``)
      bias under the softmax over keys of ``embedded_gaussian`` (it adds
      ``theta_i . b`` to row ``i``), and the bias of a mask conv under a
      softmax over positions (DNL's unary term, GC's attention pooling).
    * DNL's whitening subtracts the mean over positions from queries and
      keys, which removes their biases (in every mode but ``gaussian``,
      whose queries and keys are the input itself).

    Args:
        block (nn.Module): A NonLocal, DisentangledNonLocal or ContextBlock.

    Returns:
        set[str]: Names as :meth:`~torch.nn.Module.named_parameters` gives.
    """
    zero = {'conv_mask.bias'}
    mode = getattr(block, 'mode', None)
    whitened = getattr(block, 'use_pairwise', False) and mode != 'gaussian'
    if mode == 'embedded_gaussian' or whitened:
        zero |= {'phi.conv.bias', 'phi.0.conv.bias'}
    if whitened:
        zero.add('theta.conv.bias')
    return zero & {name for name, _ in block.named_parameters()}


def assert_grads_close(actual_params, expected_params, rtol, zero=()):
    """Compares parameter gradients tensor by tensor.

    Each gradient must be within ``rtol`` of the expected one in the norm of
    the expected one, except those named in ``zero``
    (:func:`exactly_zero_grads`): there both paths return rounding noise,
    whose size is set by the magnitudes the same sums carry elsewhere in the
    module, not by the (zero) result. Their largest error is held to
    ``rtol`` times the module's gradient scale, the largest ``|gradient|``
    over all its parameters. (That they are zero is checked in fp32 by
    ``test_blocks.py::test_every_parameter_gets_a_gradient``; in bf16 a
    cancelling sum of rounded terms leaves noise of about ``eps`` times the
    scale in each path, so only the paths' difference is compared.)

    Args:
        actual_params: ``(name, parameter)`` pairs.
        expected_params: Parameters in the same order.
        rtol (float): From :func:`tolerance`.
        zero (set[str]): Names whose gradient is zero in exact arithmetic.
    """
    actual_params, expected_params = list(actual_params), list(expected_params)
    assert len(actual_params) == len(expected_params)
    scale = max(p.grad.double().abs().max().item() for p in expected_params)
    for (name, a), b in zip(actual_params, expected_params):
        got, want = a.grad.double(), b.grad.double()
        if name in zero:
            err = (got - want).abs().max().item()
            bound = rtol * scale
        else:
            err, bound = rel_err(got, want), rtol
        assert err <= bound, f'{name}: grad error {err:.3e} > {bound:.3e}'


def cpu_autocast_supported(dtype):
    """Whether CPU autocast runs matmuls and convs in ``dtype``.

    Found by trying it rather than from the version: torch 2.1 refuses fp16
    (it warns and disables autocast, or raises), later releases run it.
    """
    a = torch.ones(2, 2)
    image, weight = torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with torch.autocast('cpu', dtype=dtype):
                outputs = (torch.mm(a, a),
                           torch.nn.functional.conv2d(image, weight))
    except (RuntimeError, TypeError, ValueError):
        return False
    return all(out.dtype == dtype for out in outputs)


@pytest.fixture(scope='module')
def one_thread():
    """Tiny tensors: extra threads only contend on a shared machine. Use as
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def activate(module, seed=0):
    """Random weights, so that a zero-initialised block does something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return module

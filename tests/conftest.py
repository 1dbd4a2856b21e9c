import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(actual, expected):
    """Relative error of ``actual`` in the norm of ``expected``."""
    actual, expected = actual.double(), expected.double()
    scale = expected.norm().clamp_min(1e-30)
    return ((actual - expected).norm() / scale).item()


def assert_grads_close(actual_params, expected_params, rtol):
    """Compares parameter gradients tensor by tensor.

    Some gradients are zero in exact arithmetic (the key bias under a softmax,
    every bias that DNL's whitening removes); both paths then return rounding
    noise, so each tensor is also allowed an error of ``rtol`` times the
    largest gradient norm of the module.
    """
    actual_params, expected_params = list(actual_params), list(expected_params)
    scale = max(p.grad.double().norm().item() for p in expected_params)
    for (name, a), b in zip(actual_params, expected_params):
        err = (a.grad.double() - b.grad.double()).norm().item()
        bound = rtol * (b.grad.double().norm().item() + 1e-3 * scale)
        assert err <= bound, f'{name}: grad error {err:.3e} > {bound:.3e}'

import pytest
import torch

from invert import AVR, CReLU, avr, crelu, crelu_inverse


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_crelu_matches_formula(dtype):
    x = torch.randn(3, 4, 5, 6).to(dtype)
    y = crelu(x)
    assert y.dtype == dtype and y.shape == (3, 8, 5, 6)
    # hand-written: positive half first, then the negated negative part
    expected_pos = torch.where(x > 0, x, torch.zeros_like(x))
    expected_neg = torch.where(x < 0, -x, torch.zeros_like(x))
    assert torch.equal(y[:, :4], expected_pos)
    assert torch.equal(y[:, 4:], expected_neg)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_crelu_dim_and_exact_inverse(dim):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = crelu(x, dim=dim)
    assert y.shape[dim] == 2 * x.shape[dim]
    assert torch.equal(crelu_inverse(y, dim=dim), x)
    assert torch.equal(CReLU(dim)(x), y)


def test_crelu_inverse_rejects_odd_channels():
    with pytest.raises(ValueError, match="even number of channels"):
        crelu_inverse(torch.zeros(1, 3, 2, 2))


def test_avr_matches_formula():
    x = torch.randn(10, dtype=torch.float64)
    assert torch.equal(avr(x), torch.where(x < 0, -x, x))
    assert torch.equal(AVR()(x), avr(x))


def test_gradcheck():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(lambda t: crelu(t, 1), (x,))
    assert torch.autograd.gradcheck(avr, (x,))

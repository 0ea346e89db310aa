"""Activation schemes of the paper: CReLU (Definition 2.1) and AVR.

CReLU keeps both signs of a linear response, ``rho_c(x) = ([x]+, [-x]+)``, so a
convolution with K filters followed by CReLU emits 2K channels: the positive half
first, the negative half second (the order of TensorFlow's ``tf.nn.crelu``). The
pre-activation is recovered exactly as ``pos - neg`` (:func:`crelu_inverse`).
AVR (absolute value rectification, Jarrett et al. 2009) keeps only the modulus.
"""

from __future__ import annotations

import torch
from torch import nn

from invert.errors import UserError

__all__ = ["crelu", "crelu_inverse", "avr", "CReLU", "AVR"]


def crelu(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Concatenated ReLU: ``cat([relu(x), relu(-x)], dim)``.

    Parameters
    ----------
    x : torch.Tensor
        Input of any floating dtype, on any device.
    dim : int, optional
        Axis along which the two halves are concatenated (channels by default).

    Returns
    -------
    torch.Tensor
        Twice the size of ``x`` along ``dim``; positive half first.

    Examples
    --------
    >>> import torch
    >>> crelu(torch.tensor([[1.0, -2.0]]), dim=1)
    tensor([[1., 0., 0., 2.]])
    """
    # one cat then one in-place ReLU: bitwise equal to cat(relu(x), relu(-x)), ~2x faster
    return torch.cat((x, -x), dim=dim).relu_()


def crelu_inverse(y: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Exact pre-activation from a CReLU output: ``pos - neg``.

    Parameters
    ----------
    y : torch.Tensor
        A CReLU output; its size along ``dim`` must be even.
    dim : int, optional
        The concatenation axis used by :func:`crelu`.

    Returns
    -------
    torch.Tensor
        ``z`` with ``crelu(z, dim) == y`` whenever ``y`` is a CReLU output.

    Examples
    --------
    >>> import torch
    >>> z = torch.randn(2, 3, 4, 4)
    >>> bool(torch.equal(crelu_inverse(crelu(z)), z))
    True
    """
    size = y.shape[dim]
    if size % 2:
        raise UserError(
            f"a CReLU output has an even number of channels along dim {dim}; got {size}"
        )
    pos, neg = torch.split(y, size // 2, dim=dim)
    return pos - neg


def avr(x: torch.Tensor) -> torch.Tensor:
    """Absolute value rectification ``|x|``.

    Examples
    --------
    >>> import torch
    >>> avr(torch.tensor([-1.5, 2.0]))
    tensor([1.5000, 2.0000])
    """
    return torch.abs(x)


class CReLU(nn.Module):
    """Module form of :func:`crelu`.

    Examples
    --------
    >>> import torch
    >>> CReLU()(torch.zeros(1, 8, 4, 4)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crelu(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class AVR(nn.Module):
    """Module form of :func:`avr`.

    Examples
    --------
    >>> import torch
    >>> AVR()(torch.tensor([-3.0]))
    tensor([3.])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avr(x)

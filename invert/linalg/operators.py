"""The linear operator of a convolution layer, written once.

:class:`ConvOperator` is the map ``T: x -> conv2d(x, W)`` (no bias) of one layer on
inputs of a fixed size, with its exact adjoint ``T^T``, the normal operator
``T^T T``, for circular padding its Fourier symbol, and (for tests) its dense
matrix. Reconstruction solves least-squares problems with it; frame bounds are the
extreme eigenvalues of its normal operator.

Conventions
-----------
Zero padding is PyTorch's ``conv2d``. Circular padding is convolution on the torus
``Z_H x Z_W``: ``y[o, p] = sum_{c, q} w[o, c, q] x[c, (s p + d q - pad) mod N]`` for
``p`` in ``Z_{N/s}``. When ``2 pad = d (k - 1)`` this equals ``nn.Conv2d`` with
``padding_mode="circular"``. The input size must be a multiple of the stride.

Fourier symbol (circular padding). Split the input into its ``s_h s_w`` polyphase
components ``x_r[n] = x[s n + r]`` (:meth:`ConvOperator.polyphase`), each on the
torus ``Z_M`` with ``M = N / s``. A tap ``q`` reads ``x[s p + t]`` with
``t = d q - pad = s a + r``, i.e. ``x_r[p + a]``, so ``T`` is a stride-1 circular
convolution of the ``C_in s_h s_w`` polyphase channels and, with
``X(w) = sum_n x[n] exp(-2 pi i w.n / M)`` (``torch.fft``),
``Y(w) = K(w) X_poly(w)`` where ``K(w) = sum_a k[a] exp(+2 pi i w.a / M)`` is a
``C_out x C_in s_h s_w`` matrix per frequency (:meth:`ConvOperator.symbol`). The
polyphase split is a permutation and the normalised DFT is unitary, so the singular
values of ``T`` are those of the matrices ``K(w)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from invert.errors import UserError, UserTypeError

__all__ = ["DENSE_MAX_DIM", "ConvOperator", "as_conv_weight", "as_pair", "conv_padding"]

#: Largest input dimension for which analyses build dense matrices (a 4096 x 4096
#: float64 matrix is 128 MiB and takes seconds to decompose); above it they go matrix-free.
DENSE_MAX_DIM = 4096

_PADDING_MODES = ("zeros", "circular")


def as_pair(value, what: str = "value") -> tuple[int, int]:
    """An int or a pair of ints (kernel, stride, padding, size) as a pair; else an error.

    Examples
    --------
    >>> as_pair(3), as_pair((2, 1))
    ((3, 3), (2, 1))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:
        raise UserTypeError(f"{what} must be an int or a pair of ints; got {value!r}") from None
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{what} must be an int or a pair of ints; got {value!r}")
    return value


def as_conv_weight(weight) -> torch.Tensor:
    """A 4-D conv weight (tensor or array) as a detached tensor, validated.

    Examples
    --------
    >>> as_conv_weight(torch.ones(2, 1, 3, 3)).shape
    torch.Size([2, 1, 3, 3])
    """
    if hasattr(weight, "__array__") and not isinstance(weight, torch.Tensor):  # numpy
        weight = torch.as_tensor(weight)
    if not isinstance(weight, torch.Tensor):
        raise UserTypeError(
            f"expected an nn.Conv2d or a 4-D conv weight; got {type(weight).__name__}"
        )
    weight = weight.detach()
    if weight.dim() != 4:
        raise UserError(
            f"a conv weight has shape (C_out, C_in/groups, kh, kw); got {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise UserTypeError(f"conv weights must be floating point; got {weight.dtype}")
    if weight.numel() == 0:
        raise UserError(f"the conv weight is empty: shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise UserError("the conv weight contains NaN or Inf values")
    return weight


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The per-side zero-padding amount of ``conv`` (``"same"``/``"valid"`` resolved).

    Examples
    --------
    >>> conv_padding(nn.Conv2d(1, 1, 5, padding="same")), conv_padding(nn.Conv2d(1, 1, 3))
    ((2, 2), (0, 0))
    """
    amount = conv.padding
    if amount == "valid":
        return (0, 0)
    if amount == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in totals):
            raise UserError("padding='same' with an even kernel extent is not supported")
        return tuple(t // 2 for t in totals)
    return as_pair(amount, "padding")


class ConvOperator:
    """The linear map of a 2-D convolution on inputs of a fixed size.

    Parameters
    ----------
    weight : torch.Tensor
        Filters of shape ``(C_out, C_in / groups, k_h, k_w)``.
    input_size : int or (int, int)
        Spatial size ``(H, W)`` of the inputs.
    stride, dilation : int or (int, int), optional
        As in :class:`torch.nn.Conv2d`.
    padding : int, (int, int) or "valid", optional
        Padding on each side, as in :class:`torch.nn.Conv2d`.
    padding_mode : {"zeros", "circular"}, optional
        Zero padding, or convolution on the torus (see the module notes).
    groups : int, optional
        As in :class:`torch.nn.Conv2d`.

    Examples
    --------
    >>> import torch
    >>> op = ConvOperator(torch.randn(4, 2, 3, 3, dtype=torch.float64), 8, padding=1)
    >>> x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    >>> y = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    >>> bool(torch.isclose((op.apply(x) * y).sum(), (x * op.adjoint(y)).sum()))
    True
    """

    def __init__(
        self,
        weight: torch.Tensor,
        input_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        padding_mode: str = "zeros",
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
    ):
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
            raise UserError(f"a conv weight has shape (C_out, C_in/groups, kh, kw); got {shape}")
        if not weight.is_floating_point():
            raise UserTypeError(f"conv weights must be floating point; got {weight.dtype}")
        if not torch.isfinite(weight).all():
            raise UserError("conv weights contain NaN or Inf")
        if padding_mode not in _PADDING_MODES:
            raise UserError(
                f"padding_mode {padding_mode!r} is not supported; use 'zeros' or 'circular'"
            )
        if not isinstance(groups, int) or groups < 1:
            raise UserError(f"groups must be a positive int; got {groups!r}")
        if weight.shape[0] % groups:
            raise UserError(f"{weight.shape[0]} filters cannot be split into {groups} groups")
        self.weight = weight
        self.input_size = as_pair(input_size, "input_size")
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        if padding == "valid":
            padding = 0
        elif isinstance(padding, str):
            raise UserError(f"padding {padding!r} is not supported; give the amount per side")
        self.padding = as_pair(padding, "padding")
        self.padding_mode = padding_mode
        self.groups = groups
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise UserError("stride and dilation must be >= 1 and padding >= 0")
        self.kernel_size = tuple(weight.shape[2:])
        extent = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size)]
        if padding_mode == "circular":
            for n, s in zip(self.input_size, self.stride):
                if n % s:
                    raise UserError(
                        f"circular padding needs an input size divisible by the stride; "
                        f"got size {n} with stride {s}"
                    )
            self.output_size = tuple(n // s for n, s in zip(self.input_size, self.stride))
        else:
            sizes = []
            for n, s, p, e in zip(self.input_size, self.stride, self.padding, extent):
                if n + 2 * p < e:
                    raise UserError(
                        f"input size {self.input_size} is smaller than the kernel extent "
                        f"{tuple(extent)} (padding {self.padding}); use a larger input"
                    )
                sizes.append((n + 2 * p - e) // s + 1)
            self.output_size = tuple(sizes)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: int | Sequence[int]) -> ConvOperator:
        """The operator of an ``nn.Conv2d`` (its bias is not part of it).

        Examples
        --------
        >>> from torch import nn
        >>> op = ConvOperator.from_conv(nn.Conv2d(3, 8, 3, stride=2, padding=1), 32)
        >>> op.in_shape, op.out_shape
        ((3, 32, 32), (8, 16, 16))
        """
        if not isinstance(conv, nn.Conv2d):
            raise UserTypeError(f"expected an nn.Conv2d; got {type(conv).__name__}")
        return cls(
            conv.weight.detach(),
            input_size,
            stride=conv.stride,
            padding=conv_padding(conv),
            padding_mode=conv.padding_mode,
            dilation=conv.dilation,
            groups=conv.groups,
        )

    # --- shapes and conversions ----------------------------------------------------

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, *self.output_size)

    def to(self, *args, **kwargs) -> ConvOperator:
        """The same operator with its weight moved/cast as ``Tensor.to`` does."""
        new = object.__new__(ConvOperator)
        new.__dict__.update(self.__dict__)
        new.weight = self.weight.to(*args, **kwargs)
        return new

    def split_groups(self) -> list[ConvOperator]:
        """One operator per group: ``T`` is block diagonal over the groups."""
        if self.groups == 1:
            return [self]
        per = self.out_channels // self.groups
        parts = []
        for g in range(self.groups):
            part = self.to(self.weight.device)
            part.weight = self.weight[g * per : (g + 1) * per]
            part.groups = 1
            parts.append(part)
        return parts

    def _check_input(self, x: torch.Tensor, shape: tuple, what: str) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise UserError(f"{what} must have shape (N, {', '.join(map(str, shape))}); "
                             f"got {tuple(x.shape)}")  # fmt: skip
        return x

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(device=x.device, dtype=x.dtype)

    # --- the operator ---------------------------------------------------------------

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``T x`` for a batch ``x`` of shape ``(N, *in_shape)``."""
        self._check_input(x, self.in_shape, "input")
        w = self._weight_for(x)
        if self.padding_mode == "circular":
            x = self._wrap_pad(x)
            y = F.conv2d(x, w, stride=self.stride, dilation=self.dilation, groups=self.groups)
            return y[..., : self.output_size[0], : self.output_size[1]]
        return F.conv2d(
            x, w, stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups,
        )  # fmt: skip

    __call__ = apply

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``T^T y`` for a batch ``y`` of shape ``(N, *out_shape)``."""
        self._check_input(y, self.out_shape, "output")
        w = self._weight_for(y)
        if self.padding_mode == "circular":
            # transposed conv onto the padded extent, then fold it back onto the torus
            ext = F.conv_transpose2d(
                y, w, stride=self.stride, dilation=self.dilation, groups=self.groups
            )
            return self._fold(ext)
        extra = []
        for n, s, p, k, d, m in zip(
            self.input_size, self.stride, self.padding, self.kernel_size, self.dilation,
            self.output_size,
        ):  # fmt: skip
            extra.append(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1))
        return F.conv_transpose2d(
            y, w, stride=self.stride, padding=self.padding, output_padding=tuple(extra),
            dilation=self.dilation, groups=self.groups,
        )  # fmt: skip

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``T^T T x``."""
        return self.adjoint(self.apply(x))

    def _extent(self) -> tuple[int, int]:
        # padded input length that the strided conv needs for output_size positions
        return tuple(
            (m - 1) * s + d * (k - 1) + 1
            for m, s, d, k in zip(self.output_size, self.stride, self.dilation, self.kernel_size)
        )

    def _wrap_indices(self, axis: int, device) -> torch.Tensor:
        n, p = self.input_size[axis], self.padding[axis]
        return (torch.arange(self._extent()[axis], device=device) - p) % n

    def _wrap_pad(self, x: torch.Tensor) -> torch.Tensor:
        x = x.index_select(2, self._wrap_indices(0, x.device))
        return x.index_select(3, self._wrap_indices(1, x.device))

    def _fold(self, ext: torch.Tensor) -> torch.Tensor:
        # adjoint of _wrap_pad: add every padded position back onto its torus point
        (h, w), (eh, ew) = self.input_size, self._extent()
        ext = ext[..., :eh, :ew]
        out = ext.new_zeros(*ext.shape[:2], h, ew)
        out.index_add_(2, self._wrap_indices(0, ext.device), ext)
        folded = ext.new_zeros(*ext.shape[:2], h, w)
        folded.index_add_(3, self._wrap_indices(1, ext.device), out)
        return folded

    # --- Fourier symbol (circular padding) -----------------------------------------------

    @property
    def polyphase_size(self) -> tuple[int, int]:
        """Size ``M = N / s`` of each polyphase component (circular padding)."""
        return tuple(n // s for n, s in zip(self.input_size, self.stride))

    def polyphase(self, x: torch.Tensor) -> torch.Tensor:
        """Split ``(N, C, H, W)`` into ``(N, C s_h s_w, H/s_h, W/s_w)`` polyphase channels.

        Channel ``c s_h s_w + r_h s_w + r_w`` holds ``x[c, s_h n_h + r_h, s_w n_w + r_w]``.
        """
        (sh, sw), (mh, mw) = self.stride, self.polyphase_size
        n, c = x.shape[:2]
        x = x.reshape(n, c, mh, sh, mw, sw).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, c * sh * sw, mh, mw)

    def unpolyphase(self, xp: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`polyphase`."""
        (sh, sw), (mh, mw) = self.stride, self.polyphase_size
        n = xp.shape[0]
        c = xp.shape[1] // (sh * sw)
        x = xp.reshape(n, c, sh, sw, mh, mw).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c, mh * sh, mw * sw)

    def _axis_phases(self, axis: int, frequencies: torch.Tensor) -> torch.Tensor:
        """``(len(frequencies), s, k)`` matrix: the phase of tap q in residue class r."""
        s, d, p = self.stride[axis], self.dilation[axis], self.padding[axis]
        k, m = self.kernel_size[axis], self.polyphase_size[axis]
        taps = d * torch.arange(k) - p
        residue, shift = taps % s, torch.div(taps, s, rounding_mode="floor")
        angle = 2 * math.pi * frequencies.to(torch.float64)[:, None] * shift[None, :] / m
        phase = torch.polar(torch.ones_like(angle), angle)  # (F, k)
        mask = (residue[None, :] == torch.arange(s)[:, None]).to(phase.dtype)  # (s, k)
        return phase[:, None, :] * mask[None, :, :]

    def symbol(
        self, rows: torch.Tensor | Sequence[int] | None = None, *, onesided: bool = True
    ) -> torch.Tensor:
        """The per-frequency matrices ``K(w)`` of a circular convolution.

        Parameters
        ----------
        rows : sequence of int, optional
            Vertical frequencies ``w_h`` to evaluate (all by default); evaluate a few
            rows at a time to bound memory.
        onesided : bool, optional
            Horizontal frequencies ``0 .. M_w // 2`` only (``torch.fft.rfft2`` layout),
            enough for real weights since ``K(-w) = conj(K(w))``.

        Returns
        -------
        torch.Tensor
            Complex tensor ``(len(rows), F_w, C_out, C_in s_h s_w)``; block diagonal
            over the groups. Complex128 for float64 weights, else complex64.

        Examples
        --------
        >>> import torch
        >>> delta = torch.zeros(1, 1, 3, 3); delta[0, 0, 1, 1] = 1
        >>> op = ConvOperator(delta, 8, padding=1, padding_mode="circular")
        >>> bool(torch.allclose(op.symbol().abs(), torch.ones(8, 5, 1, 1)))
        True
        """
        if self.padding_mode != "circular":
            raise UserError("the Fourier symbol exists for padding_mode='circular' only")
        mh, mw = self.polyphase_size
        rows = torch.arange(mh) if rows is None else torch.as_tensor(rows)
        cols = torch.arange(mw // 2 + 1 if onesided else mw)
        complex_dtype = torch.complex128 if self.weight.dtype == torch.float64 else torch.complex64
        device = self.weight.device
        ph = self._axis_phases(0, rows).to(device, complex_dtype)  # (Fh, sh, kh)
        pw = self._axis_phases(1, cols).to(device, complex_dtype)  # (Fw, sw, kw)
        per_group = self.out_channels // self.groups
        cin_g = self.weight.shape[1]
        sh, sw = self.stride
        blocks = []
        for g in range(self.groups):
            w = self.weight[g * per_group : (g + 1) * per_group].to(complex_dtype)
            # K[fh, fw, o, c, rh, rw] = sum_{qh, qw} w[o, c, qh, qw] ph[fh, rh, qh] pw[fw, rw, qw]
            k = torch.einsum("ocij,fai,gbj->fgocab", w, ph, pw)
            blocks.append(k.reshape(len(rows), len(cols), per_group, cin_g * sh * sw))
        if self.groups == 1:
            return blocks[0]
        return _block_diag(blocks)

    # --- dense matrix (tests only) ---------------------------------------------------------

    def dense(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The matrix of ``T`` (rows: flattened outputs, columns: flattened inputs).

        Built column by column from unit inputs: for small sizes and tests only.
        """
        numel = math.prod(self.in_shape)
        if numel > 20_000:
            raise UserError(f"dense matrix of {numel} columns is too large; use a smaller input")
        eye = torch.eye(numel, dtype=dtype, device=self.weight.device)
        return self.to(dtype=dtype).apply(eye.reshape(numel, *self.in_shape)).reshape(numel, -1).T


def _block_diag(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Batched block-diagonal matrix over the last two axes."""
    rows = sum(b.shape[-2] for b in blocks)
    cols = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(*blocks[0].shape[:-2], rows, cols)
    r = c = 0
    for b in blocks:
        out[..., r : r + b.shape[-2], c : c + b.shape[-1]] = b
        r, c = r + b.shape[-2], c + b.shape[-1]
    return out

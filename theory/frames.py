"""Frame bounds of convolution layers.

The shifted filters ``{tau_p w_k}`` of a conv layer ``T`` (stride, padding, dilation and
groups as in the layer, bias excluded) form a *frame* of the input space with bounds
``A`` and ``B`` when

    A ||x||^2  <=  sum_{k,p} <x, tau_p w_k>^2 = ||T x||^2  <=  B ||x||^2   for every x,

i.e. ``A`` and ``B`` are the smallest and largest eigenvalues of ``T^T T`` over the
**input** space. ``A = 0`` exactly when ``T`` has a kernel (the layer cannot be a frame:
some input is invisible to it), e.g. when there are fewer output values than input
values. ``B / A`` is the condition number of the reconstruction ``x = T^+ T x``
(squared: ``B / A = kappa(T)^2``).

Methods (:func:`frame_bounds`):

* ``"fft"`` (circular padding, exact). On the torus the operator is block diagonal in
  the Fourier basis: at each frequency ``w`` it acts as the ``C_out x C_in s_h s_w``
  matrix ``K(w)`` (polyphase blocks for stride ``s``; see :mod:`invert.linalg.operators`), so
  the eigenvalues of ``T^T T`` are those of the Gram matrices ``K(w)^H K(w)``, with
  ``C_in s_h s_w - C_out`` zero eigenvalues per frequency when ``K(w)`` is wide (then
  ``A = 0``). Real weights give ``K(-w) = conj K(w)``: only half the frequencies are
  visited (one-sided layout), and frequencies are visited a few rows at a time so
  memory stays bounded. Groups make ``T`` block diagonal: the spectrum is the union of
  the groups' spectra. Only the extreme eigenvalues are wanted, so most frequencies
  are settled by a *certificate* instead of an eigendecomposition: a Cholesky
  factorisation of ``K^H K - (a + m) I`` (resp. ``(b - m) I - K^H K``) that succeeds
  proves ``lambda_min(w) > a`` (resp. ``lambda_max(w) < b``), where ``a``/``b`` are the
  best exact values found so far and ``m`` bounds the rounding error; the frequencies
  that fail are solved exactly. For stride 1 the Gram matrices come directly from the
  Fourier symbol of ``T^T T`` itself, a circular convolution with the filters'
  autocorrelation (``2k - 1`` taps), which is much cheaper than forming ``K^H K``.
  Finally ``A`` is recomputed from the singular values of ``K(w)`` at the minimising
  frequencies, which keeps ill-conditioned layers accurate (eigenvalues of a Gram
  matrix carry an absolute error near ``eps * B``; a singular value ``sigma_min``
  only ``eps * sqrt(B)``).
* ``"fft-svd"`` (circular padding, :func:`frame_spectrum`): the singular values of every
  ``K(w)``, i.e. the whole spectrum with its multiplicities.
The dense, Lanczos and Krylov methods are one engine,
:func:`invert.linalg.spectrum.extreme_eigenvalues`, applied to ``T^T T`` of each group:

* ``"dense"`` (any padding, small inputs): the engine's dense method, ``eigvalsh`` in
  float64 of the matrix of ``T^T T`` built column by column with
  :meth:`ConvOperator.normal`. Used for zero padding when the input dimension per group is
  at most :data:`DENSE_MAX_DIM` (the engine's one threshold; a ``4096 x 4096`` float64
  matrix: 128 MiB, seconds).
* ``"lanczos"`` (zero padding): the engine's Lanczos as it is (float64 products, random
  start, at most ``max_iter`` products, default 1000). Its ``tol`` is the *a posteriori*
  residual norm ``||T^T T v - theta v||`` of the Ritz pairs, so each reported value is
  within ``tol`` of an eigenvalue of ``T^T T``. A bound whose solve did not converge is
  reported as ``nan`` with ``converged=False`` and a :class:`FrameBoundsWarning`.
* ``"krylov"`` (zero padding, large inputs; the default there): the engine's Lanczos from
  a chosen start, both ends from one run with full
  reorthogonalisation gives both ends (at most ``max_iter`` products of ``T^T T``,
  basis capped at 1 GiB). Products are float32 when ``rtol >= 1e-5`` (about 4x faster
  than float64 convolutions on a CPU), the recurrence and the Ritz values float64.
  The start is the top singular vector of the symbol of a circular version of the
  layer at its peak frequency, as a plane wave tapered by a sine window (its Rayleigh
  quotient is within ``O(1/N^2)`` of ``B``), plus a random part for the bottom. A Ritz
  value lies inside the spectrum, so the reported ``A`` is an upper bound on the true
  one and ``B`` a lower bound (up to the products' rounding, which ``tol`` includes);
  ``tol`` also bounds the distance to an eigenvalue (the residual ``beta_k |s_k|``).
  Where the Fourier work is small, ``B_upper`` is a proven upper bound on ``B``: the
  zero-padded ``T`` is a block of the circular operator ``T_c`` on a torus of
  ``N + p`` pixels (``T = R T_c P``, see ``_enclosing_torus``), so ``B <= B(T_c)``.
* ``"1x1"`` (zero padding, 1x1 kernels, any size): exact. ``T^T T`` is ``W^T W`` on every
  pixel that an output reads and 0 on the others (stride 2 skips three pixels in four:
  ``A = 0``).

Where the time goes (VGG-16 at 224, zero padding, 2 cores, profiled): the products
``T^T T x`` (0.18 s each for 64x64x3x3 at 224 in float32, 0.8 s in float64) and, for
``B_upper``, the Fourier certificates (9 s for the same layer, more than the whole
budget; hence only where cheap). ``scipy.sparse.linalg.lobpcg`` spent 5 s per
iteration in its own dense algebra on 3.2M-vectors and ``eigsh`` needs a 100-vector
float64 basis (2.6 GB), so both are out at this size.

What ``A`` means with zero padding: the circular symbol of a square layer (``C_out =
C_in``) generically vanishes at isolated frequencies, and the zero-padded operator
then has eigenvectors localised at the border whose eigenvalues fall exponentially
with the size (dense, 8 -> 8 channels, 3x3: ``A = 1.4e-6, 1.1e-7, 9.3e-9, 4.3e-11`` at
8, 12, 16, 20 px, while the circular ``A`` stays near ``1e-5``). At 224 px such an ``A``
is far below float64 resolution; no iterative method resolves it, and ``"krylov"``
reports an upper bound (about ``B / k^2`` after ``k`` products) with
``converged=False``. Layers with more outputs than inputs (``C_out >= 2 C_in``) have an
``A`` bounded away from 0 that converges with the size (a corner mode, below the
circular one).

Precision: float64 by default. Float32 is not enough for ``A`` of ill-conditioned
layers: rounding of the weights alone moves a singular value by about
``1e-7 * sigma_max``, so any ``A`` below ``1e-14 B`` is noise (see the Examples of
:func:`frame_bounds`).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from invert.device import check_memory, resolve_device
from invert.errors import UserError, UserTypeError
from invert.linalg.operators import (
    ConvOperator,
    as_conv_weight,
    as_pair,
    conv_padding,
)
from invert.linalg.spectrum import DENSE_MAX_DIM, extreme_eigenvalues
from invert.nn import conv_input_sizes, conv_layers, select_layers
from invert.progress import progress_bar

__all__ = [
    "FrameBounds",
    "FrameBoundsWarning",
    "LayerFrameBounds",
    "frame_bounds",
    "frame_spectrum",
    "checkpoint_frame_bounds",
    "DENSE_MAX_DIM",
]


_CHUNK_BYTES = 64 * 2**20  # working memory per block of frequencies
_DIRECT_GRAM_SIZE = 32  # Gram matrices up to this size are simply eigendecomposed
_METHODS = ("auto", "fft", "dense", "lanczos", "krylov")
_PARALLEL_FLOPS = 1e9  # spread the frequencies over threads above this much work
_LANCZOS_ITER = 1000  # products of the "lanczos" method (float64, random start)
_KRYLOV_ITER = 300  # products of the "krylov" method (both ends from one Krylov space)
_BASIS_BYTES = 1 << 30  # the engine's Lanczos basis cap (invert.linalg.spectrum)
_FLOAT32_RTOL = 1e-5  # looser tolerances are met with float32 products
_BRACKET_FLOPS = 2e9  # the FFT upper bound on B of the "krylov" method, when this cheap
_UNCONVERGED = {
    "krylov": "krylov short of rtol: A is an upper bound and B a lower one (each within tol), "
    "so B/A is a lower bound"
}
_SHORT_B = "krylov short of rtol: B is a lower bound within tol (A = 0: fewer outputs than inputs)"
_COARSE = 32  # frequencies per axis that locate the symbol's peak otherwise


class FrameBoundsWarning(RuntimeWarning):
    """An iterative frame-bound computation did not reach its tolerance."""


@dataclass(frozen=True)
class FrameBounds:
    """Frame bounds of a conv layer: extreme eigenvalues of ``T^T T`` on the input space.

    Attributes
    ----------
    A, B : float
        Lower and upper frame bounds (``0 <= A <= B``).
    method : str
        ``"fft"``, ``"fft-svd"``, ``"dense"``, ``"lanczos"``, ``"krylov"`` or ``"1x1"``
        (see the module notes).
    tol : float
        Absolute accuracy of ``A`` and ``B``: for the exact methods the floating-point
        error estimate ``16 n eps B`` (``n`` the size of the matrices eigendecomposed;
        the same margin guards the Cholesky certificates; ``A`` from singular values is
        usually far more accurate); for ``"lanczos"`` the largest residual norm of the
        Ritz pairs, an a-posteriori bound.
    converged : bool
        ``False`` when an iterative solve stopped before its tolerance.
    input_dim : int
        Dimension ``C_in H W`` of the input space.
    spectrum : numpy.ndarray or None
        From :func:`frame_spectrum`: every eigenvalue of ``T^T T`` (every squared singular
        value of ``T``, zeros included), ascending, ``input_dim`` values.
    B_upper : float or None
        ``"krylov"``: a proven upper bound on ``B`` (``B`` itself is a Rayleigh quotient,
        a proven lower bound), from the circular operator of an enclosing torus.
    """

    A: float
    B: float
    method: str
    tol: float
    converged: bool = True
    input_dim: int = 0
    spectrum: np.ndarray | None = field(default=None, repr=False)
    B_upper: float | None = None

    @property
    def ratio(self) -> float:
        """``B / A``; ``inf`` when ``A = 0``."""
        if self.A > 0:
            return self.B / self.A
        return math.inf if self.B > 0 else math.nan

    @property
    def is_frame(self) -> bool:
        """Whether ``A`` is certainly positive: ``A > tol``."""
        return bool(self.A > self.tol)


# --- the public entry points ------------------------------------------------------


def frame_bounds(
    conv_or_weight,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = "circular",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float64,
    device=None,
    method: str = "auto",
    rtol: float = 1e-8,
    max_iter: int | None = None,
) -> FrameBounds:
    """Lower and upper frame bounds of the shifted filters of a conv layer.

    Every eigenvalue of ``T^T T`` (not only the two extremes) is :func:`frame_spectrum`.

    Parameters
    ----------
    conv_or_weight : nn.Conv2d, torch.Tensor or numpy.ndarray
        A conv layer (its stride, dilation and groups are used; its bias is not part of
        the operator) or a weight ``(C_out, C_in / groups, k_h, k_w)``.
    input_size : int or (int, int)
        Spatial size ``(H, W)`` of the layer's input.
    stride, dilation, groups : optional
        As in :class:`torch.nn.Conv2d`; taken from the layer when one is given (then
        they must be left at their defaults or agree with the layer).
    padding : {"circular", "zeros"} or int or (int, int), optional
        ``"circular"``: convolution on the torus (exact by FFT). ``"zeros"``: zero
        padding by the layer's own amount, or, for a bare weight, by
        ``dilation * (k - 1) // 2`` on each side ("same" for odd kernels). An int or a
        pair: zero padding by that amount.
    dtype : torch.dtype, optional
        ``torch.float64`` (default) or ``torch.float32``.
    device : str or torch.device, optional
        Where to compute; ``None`` means CUDA when available, else CPU.
    method : {"auto", "fft", "dense", "lanczos", "krylov"}, optional
        ``"auto"``: ``"fft"`` for circular padding; for zero padding ``"dense"`` up to
        :data:`DENSE_MAX_DIM` input dimensions per group, else ``"1x1"`` (exact) for
        1x1 kernels and ``"krylov"`` for the others. ``"lanczos"``: the engine's plain
        Lanczos (float64, random start).
    rtol : float, optional
        Relative tolerance of the iterative solves (``"krylov"``: residuals ``<= rtol B``;
        float32 products when ``rtol >= 1e-5``).
    max_iter : int, optional
        Products of ``T^T T``: ``"lanczos"`` (default 1000), ``"krylov"`` (default 300).

    Returns
    -------
    FrameBounds
        ``.A``, ``.B``, ``.ratio``, ``.method``, ``.tol``, ``.converged``.

    Examples
    --------
    A delta filter is an orthonormal basis (``A = B = 1``); the four 2x2 Haar filters
    with stride 2 are an orthonormal basis too:

    >>> import torch
    >>> delta = torch.zeros(1, 1, 3, 3); delta[0, 0, 1, 1] = 1
    >>> fb = frame_bounds(delta, 8)
    >>> round(fb.A, 12), round(fb.B, 12), fb.method
    (1.0, 1.0, 'fft')
    >>> haar = torch.tensor([[1., 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
    >>> fb = frame_bounds(haar.reshape(4, 1, 2, 2) / 2, 8, stride=2)
    >>> round(fb.A, 12), round(fb.B, 12)
    (1.0, 1.0)

    Fewer filters than input channels leave a kernel (``A = 0``); zero padding is
    exact (dense) on small inputs:

    >>> fb = frame_bounds(torch.randn(2, 3, 3, 3), 8, padding="zeros")
    >>> fb.A, fb.method, fb.is_frame
    (0.0, 'dense', False)

    Large zero-padded inputs go to ``"krylov"``; with a budget that fills the space it
    agrees with the dense method, with a short one ``A`` is an upper bound:

    >>> w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> exact = frame_bounds(w, 12, padding="zeros", method="dense")
    >>> full = frame_bounds(w, 12, padding="zeros", method="krylov", rtol=1e-10, max_iter=999)
    >>> full.converged, abs(full.A - exact.A) <= full.tol, abs(full.B - exact.B) <= full.tol
    (True, True, True)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     short = frame_bounds(w, 12, padding="zeros", method="krylov", max_iter=5)
    >>> short.converged, short.A >= exact.A, short.B <= exact.B + short.tol
    (False, True, True)

    Float32 gets ``A`` wrong on ill-conditioned layers: here every filter sums to
    ``1e-8`` (the frequency response at ``w = 0`` is tiny), so ``A = 4e-16`` exactly.

    >>> g = torch.Generator().manual_seed(0)
    >>> w = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    >>> w = w - w.mean(dim=(2, 3), keepdim=True) + 1e-8 / 9
    >>> exact = float((w.sum(dim=(2, 3)) ** 2).sum())
    >>> a64 = frame_bounds(w, 8).A
    >>> a32 = frame_bounds(w, 8, dtype=torch.float32).A
    >>> abs(a64 - exact) / exact < 1e-6, abs(a32 - exact) / exact > 0.5
    (True, True)
    """
    geometry = (stride, padding, dilation, groups)
    return _frame_bounds(conv_or_weight, input_size, geometry, dtype, device, method,
                         rtol, max_iter, spectrum=False)  # fmt: skip


def frame_spectrum(
    conv_or_weight,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = "circular",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float64,
    device=None,
    method: str = "auto",
) -> FrameBounds:
    """Every eigenvalue of ``T^T T`` (every squared singular value of ``T``), with the frame
    bounds: :func:`frame_bounds` by an exact method, the whole spectrum kept.

    The options are those of :func:`frame_bounds`. Circular padding: the singular values
    of every Fourier block (``"fft-svd"``); zero padding: the dense method (at most
    :data:`DENSE_MAX_DIM` input dimensions per group) or, for 1x1 kernels, ``"1x1"``.

    Returns
    -------
    FrameBounds
        With ``.spectrum``: ``input_dim`` values, ascending, zeros included.

    Examples
    --------
    Four orthonormal Haar filters with stride 2: every eigenvalue is 1.

    >>> import torch
    >>> haar = torch.tensor([[1., 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
    >>> fb = frame_spectrum(haar.reshape(4, 1, 2, 2) / 2, 4, stride=2)
    >>> fb.method, fb.spectrum.round(12).tolist() == [1.0] * 16
    ('fft-svd', True)
    """
    geometry = (stride, padding, dilation, groups)
    return _frame_bounds(conv_or_weight, input_size, geometry, dtype, device, method,
                         _FLOAT32_RTOL, None, spectrum=True)  # fmt: skip


def _frame_bounds(conv_or_weight, input_size, geometry, dtype, device, method, rtol, max_iter,
                  *, spectrum: bool) -> FrameBounds:  # fmt: skip
    """:func:`frame_bounds` and :func:`frame_spectrum`: check, build the operator, dispatch."""
    if dtype not in (torch.float32, torch.float64):
        raise UserTypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    if method not in _METHODS:
        raise UserError(f"method {method!r} is not supported; use one of {', '.join(_METHODS)}")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise UserError(f"rtol must be a number in (0, 1); got {rtol!r}")
    if max_iter is not None and not (isinstance(max_iter, int) and max_iter > 0):
        raise UserError(f"max_iter must be a positive int or None; got {max_iter!r}")
    device = resolve_device(device)
    op = _operator(conv_or_weight, input_size, *geometry)
    op = op.to(device=device, dtype=dtype)
    circular = op.padding_mode == "circular"
    if method == "auto":
        if circular:
            method = "fft"
        elif max(part.in_channels for part in op.split_groups()) * math.prod(op.input_size) <= (
            DENSE_MAX_DIM
        ):
            method = "dense"
        elif op.kernel_size == (1, 1):
            method = "1x1"  # exact at any size
        else:
            method = "krylov"
    if method == "fft" and not circular:
        raise UserError("method 'fft' needs padding='circular'; use 'dense' or 'krylov'")
    if method == "1x1":
        return _pointwise_bounds(op, spectrum=spectrum)
    if spectrum and method in ("lanczos", "krylov"):
        raise UserError(
            f"the full spectrum needs an exact method; the input dimension "
            f"{math.prod(op.in_shape)} is too large for 'dense' (max {DENSE_MAX_DIM} per "
            f"group) with zero padding; use a smaller input or padding='circular'"
        )
    if (
        method in ("lanczos", "krylov")
        and min(math.prod(p.in_shape) for p in op.split_groups()) < 3
    ):
        method = "dense"  # too small for a Krylov method
    if method in ("lanczos", "krylov"):  # the engine's basis and a few vectors of the input
        itemsize = torch.finfo(dtype).bits // 8 if method == "krylov" else 8
        steps = _KRYLOV_ITER if method == "krylov" else _LANCZOS_ITER
        needed = 8 * 6 * math.prod(op.in_shape) + 4 * itemsize * math.prod(op.out_shape)
        needed += min(_BASIS_BYTES, itemsize * math.prod(op.in_shape) * (max_iter or steps))
        check_memory(needed, device, f"Lanczos frame bounds on a {op.input_size[0]}x"
                     f"{op.input_size[1]} input", "use a smaller input size")  # fmt: skip
    if method == "fft":
        return _fft_bounds(op, spectrum=spectrum)
    if method == "dense":
        return _dense_bounds(op, spectrum=spectrum)
    if method == "krylov":
        return _krylov_bounds(op, rtol=rtol, max_iter=max_iter)
    return _lanczos_bounds(op, rtol=rtol, max_iter=max_iter)


@dataclass(frozen=True)
class LayerFrameBounds:
    """The frame bounds of one conv layer of a model (:func:`checkpoint_frame_bounds`).

    Attributes
    ----------
    layer : str
        Its name (as in :func:`invert.nn.net.conv_layers`).
    weight_shape : tuple of int
        ``(C_out, C_in / groups, kh, kw)``.
    stride : (int, int)
        Its stride.
    input_size : (int, int) or None
        ``(H, W)`` of its input; ``None`` when it did not run in the forward pass.
    bounds : FrameBounds or None
        Of its filters; ``None`` when they could not be computed (``note`` says why).
    random : FrameBounds or None
        Of the random baseline (Gaussian filters of the same shape and filter norms);
        ``None`` without the baseline or without ``bounds``.
    note : str
        Why there are no bounds, or what a bound that missed its tolerance means; ``""``
        when there is nothing to say.
    """

    layer: str
    weight_shape: tuple[int, ...]
    stride: tuple[int, int]
    input_size: tuple[int, int] | None
    bounds: FrameBounds | None
    random: FrameBounds | None = None
    note: str = ""


def checkpoint_frame_bounds(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    padding: str = "circular",
    random_baseline: bool = True,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    in_channels: int | None = None,
    device=None,
    progress: bool = False,
    rtol: float = 1e-4,
    max_iter: int = 30,
) -> list[LayerFrameBounds]:
    """Frame bounds of every conv layer of a model, with a random-filter baseline.

    The spatial input size of each layer is found by a forward pass of a zero image of
    the network input size (stopped after the last conv layer has run). Computed in
    float64: float32 gets ``A`` of ill-conditioned layers wrong (see :func:`frame_bounds`),
    so there is no ``dtype`` option. :func:`invert.display.frame_bounds_rows` turns the
    result into table rows.

    Parameters
    ----------
    model : nn.Module
        A zoo :class:`~invert.nn.Net` or any torch model with ``nn.Conv2d`` layers
        (:func:`invert.load_model` turns a checkpoint path or ``MODEL@DATA`` into one).
    input_size : int or (int, int)
        Spatial size of the network input.
    padding : {"circular", "zeros"}, optional
        Boundary model of every layer (see :func:`frame_bounds`); ``"zeros"`` uses each
        layer's own padding amount.
    random_baseline : bool, optional
        Also compute the bounds of i.i.d. Gaussian filters of the same shape, each
        rescaled to the norm of the corresponding learned filter.
    seed : int, optional
        Seed of the random filters (layer ``i`` uses ``seed + i``).
    layers : sequence of str, optional
        Only these layers (names as in :func:`invert.nn.net.conv_layers`).
    in_channels : int, optional
        Channels of the network input (default: those of the first conv layer).
    device : optional
        As in :func:`frame_bounds`.
    progress : bool, optional
        Show a bar over the layers on stderr (:mod:`invert.progress`).
    rtol, max_iter : optional
        Zero padding on inputs too large for the dense method: the tolerance and the
        product budget of the ``"krylov"`` method (see :func:`frame_bounds`). The default
        budget does VGG-16 at 224 in about 40 s on two cores; ``A`` of a layer that
        misses ``rtol`` is an upper bound (the note says so).

    Returns
    -------
    list of LayerFrameBounds
        One per conv layer, in the model's order.

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> result = checkpoint_frame_bounds(create_model("convpool_c", width=0.1), 16)
    >>> [r.layer for r in result][:3], result[0].input_size
    (['conv1', 'conv2', 'conv3'], (16, 16))
    >>> result[0].bounds.A <= result[0].bounds.B
    True
    """
    if padding not in ("circular", "zeros"):
        raise UserError(f"padding {padding!r} is not supported; use 'circular' or 'zeros'")
    model = check_model(model)
    convs = conv_layers(model)
    if not convs:
        raise UserError(f"the model ({type(model).__name__}) has no nn.Conv2d layer")
    if layers is not None:
        convs = {n: convs[n] for n in select_layers(layers, convs)}
    sizes = conv_input_sizes(model, input_size, in_channels=in_channels, convs=convs.values())
    options = dict(padding=padding, device=device, rtol=rtol, max_iter=max_iter)
    result = []
    bar = progress_bar(progress, convs.items(), total=len(convs), desc="frame bounds",
                       unit="layer")  # fmt: skip
    for index, (name, conv) in enumerate(bar):
        bar.set_postfix_str(name, refresh=False)
        seed_here = seed + index if random_baseline else None
        result.append(_layer_bounds(name, conv, sizes.get(conv), seed_here, options))
    return result


def _layer_bounds(name, conv, size, seed, options) -> LayerFrameBounds:
    """One layer of :func:`checkpoint_frame_bounds` (``seed`` None: no random baseline)."""
    here = dict(layer=name, weight_shape=tuple(conv.weight.shape), stride=tuple(conv.stride),
                input_size=None if size is None else tuple(size))  # fmt: skip
    if size is None:
        return LayerFrameBounds(**here, bounds=None, note="did not run in the forward pass")
    padding, options = options["padding"], {k: v for k, v in options.items() if k != "padding"}
    try:
        with warnings.catch_warnings():  # said in the note instead
            warnings.simplefilter("ignore", FrameBoundsWarning)
            fb = frame_bounds(conv, size, padding=padding, **options)
    except ValueError as error:  # a geometry the boundary model cannot take
        return LayerFrameBounds(**here, bounds=None, note=str(error))
    notes = []
    if not fb.converged:
        structural = fb.method == "krylov" and fb.A == 0  # A = 0 exactly: fewer outputs
        notes.append(_SHORT_B if structural else _UNCONVERGED.get(fb.method, "not converged"))
    rb = None
    if seed is not None:
        random = gaussian_like(conv.weight.detach().to("cpu", torch.float64), seed)
        own = "circular" if padding == "circular" else conv_padding(conv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FrameBoundsWarning)
            rb = frame_bounds(random, size, stride=conv.stride, dilation=conv.dilation,
                              groups=conv.groups, padding=own, **options)  # fmt: skip
        if not rb.converged:
            notes.append("random baseline not converged")
    return LayerFrameBounds(**here, bounds=fb, random=rb, note="; ".join(notes))


# --- building the operator ---------------------------------------------------------


def _operator(conv_or_weight, input_size, stride, padding, dilation, groups) -> ConvOperator:
    if isinstance(conv_or_weight, nn.Module):
        conv = conv_or_weight
        if not isinstance(conv, nn.Conv2d):
            raise UserTypeError(
                f"expected an nn.Conv2d or a 4-D conv weight; got {type(conv).__name__}"
            )
        for what, given, own in (
            ("stride", stride, conv.stride), ("dilation", dilation, conv.dilation),
            ("groups", groups, conv.groups),
        ):  # fmt: skip
            default = 1 if what == "groups" else (1, 1)
            given = given if what == "groups" else as_pair(given, what)
            if given != default and given != own:
                raise UserError(
                    f"{what}={given} disagrees with the layer's {what} {own}; leave it out"
                )
        weight = as_conv_weight(conv.weight)
        stride, dilation, groups = conv.stride, conv.dilation, conv.groups
        if not isinstance(padding, str) or padding == "zeros":
            padding = conv_padding(conv) if padding == "zeros" else padding
    else:
        weight = as_conv_weight(conv_or_weight)
    size = as_pair(input_size, "input_size")
    if min(size) < 1:
        raise UserError(f"input_size must be positive; got {size}")
    dilation = as_pair(dilation, "dilation")
    stride = as_pair(stride, "stride")
    if not isinstance(groups, int) or groups < 1:
        raise UserError(f"groups must be a positive int; got {groups!r}")
    kernel = tuple(weight.shape[2:])
    if weight.shape[0] % groups:
        raise UserError(f"{weight.shape[0]} filters cannot be split into {groups} groups")
    if isinstance(padding, str):
        if padding not in ("circular", "zeros"):
            raise UserError(
                f"padding {padding!r} is not supported; use 'circular', 'zeros' or an amount"
            )
        mode = padding
        amount = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
    else:
        mode, amount = "zeros", as_pair(padding, "padding")
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if mode == "circular" and any(n < e for n, e in zip(size, extent)):
        raise UserError(
            f"input size {size} is smaller than the kernel extent {extent}: on the torus its "
            f"taps would wrap onto each other; use a larger input or padding='zeros'"
        )
    return ConvOperator(
        weight, size, stride=stride, padding=amount, padding_mode=mode, dilation=dilation,
        groups=groups,
    )  # fmt: skip


# --- circular padding: the Fourier method ---------------------------------------------


def _column_weights(op: ConvOperator) -> torch.Tensor:
    """Multiplicity of each one-sided horizontal frequency (1 or 2)."""
    mw = op.polyphase_size[1]
    weights = torch.full((mw // 2 + 1,), 2, dtype=torch.int64)
    weights[0] = 1
    if mw % 2 == 0:
        weights[-1] = 1
    return weights


def _row_chunks(op: ConvOperator, bytes_per_frequency: int, overhead: int = 0):
    """Blocks of vertical frequencies: about ``_CHUNK_BYTES`` each, and at least the
    ``overhead`` of one symbol evaluation (up to twice ``_CHUNK_BYTES``)."""
    mh, mw = op.polyphase_size
    per_row = (mw // 2 + 1) * max(1, bytes_per_frequency)
    budget = max(_CHUNK_BYTES, min(overhead, 2 * _CHUNK_BYTES))
    rows = max(1, budget // per_row)
    for start in range(0, mh, rows):
        yield list(range(start, min(mh, start + rows)))


def _in_parallel(work, chunks: list, device: torch.device, flops: float) -> None:
    """``work(chunk)`` for every chunk; on the CPU, one chunk per core at a time.

    Batched LAPACK calls (factorisations of many small matrices) use a single core
    each, so the chunks of a large problem (``flops``, a rough count) are spread over
    threads that each run single-threaded torch.
    """
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    if workers <= 1 or len(chunks) <= 1 or flops < _PARALLEL_FLOPS:
        for chunk in chunks:
            work(chunk)
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
            for future in [pool.submit(work, chunk) for chunk in chunks]:
                future.result()
    finally:
        torch.set_num_threads(previous)


def _autocorrelation_operator(op: ConvOperator) -> ConvOperator:
    """``T^T T`` of a stride-1 circular conv, itself a circular conv (one group).

    ``(T^T T x)[c] = sum_{c', e} R[c, c', e] x[c'](n + d e)`` with
    ``R[c, c', e] = sum_{o, q} w[o, c, q] w[o, c', q + e]``, ``|e| <= k - 1``.
    """
    w = op.weight
    m, n, kh, kw = w.shape
    lags = (2 * kh - 1) * (2 * kw - 1)
    taps = [(qh, qw) for qh in range(kh) for qw in range(kw)]
    # <w[:, c, q], w[:, c', p]> contributes to the lag e = p - q
    lag = torch.tensor(
        [(p[0] - q[0] + kh - 1) * (2 * kw - 1) + p[1] - q[1] + kw - 1 for q in taps for p in taps],
        device=w.device,
    )
    r = w.new_zeros(n, n, lags)
    if (kh * kw * n) ** 2 * w.element_size() <= _CHUNK_BYTES:
        # all inner products of filter slices in one GEMM, summed along each lag
        flat = w.permute(0, 2, 3, 1).reshape(m, kh * kw * n)
        inner = (flat.T @ flat).reshape(kh * kw, n, kh * kw, n).permute(1, 3, 0, 2)
        r.index_add_(2, lag, inner.reshape(n, n, -1))
    else:  # one (n x n) GEMM per pair of taps
        pairs = [(q, p) for q in taps for p in taps]
        for (q, p), e in zip(pairs, lag.tolist()):
            r[:, :, e] += w[:, :, q[0], q[1]].T @ w[:, :, p[0], p[1]]
    r = r.reshape(n, n, 2 * kh - 1, 2 * kw - 1)
    dh, dw = op.dilation
    return ConvOperator(
        r, op.input_size, padding=(dh * (kh - 1), dw * (kw - 1)), padding_mode="circular",
        dilation=op.dilation,
    )  # fmt: skip


class _Extremes:
    """Running extreme eigenvalues over blocks of Hermitian PSD matrices.

    ``a``/``b`` are exact (eigendecomposed) values; every matrix not eigendecomposed
    has been certified by a Cholesky factorisation to have its eigenvalues in
    ``(a, b)``: if ``G - t I = L L^H`` succeeds in floating point, then
    ``lambda_min(G) > t - delta`` with ``delta`` the rounding error, and the test is
    run at ``t = a + margin`` with ``margin >= delta`` (likewise ``b I - G`` for the top).
    """

    def __init__(self, need_min: bool, dtype: torch.dtype):
        self.need_min = need_min
        self.dtype = dtype
        self.a = math.inf
        self.b = 0.0
        self.b_key = None  # the key of the matrix with the largest eigenvalue
        self.candidates: list[tuple[float, object]] = []  # (lambda_min, key) computed exactly
        self.size = 1
        # blocks may be folded in from several threads: the thresholds only move
        # outwards (a down, b up), so a certificate obtained with an older threshold
        # stays valid; the lock keeps the updates themselves whole
        self.lock = threading.Lock()

    def margin(self, size: int, dtype: torch.dtype | None = None, b: float | None = None) -> float:
        """A bound on the rounding error of a Gram matrix and of its factorisation."""
        return 16 * size * torch.finfo(dtype or self.dtype).eps * (self.b if b is None else b)

    def _exact(self, gram, index, keys, shift: float = 0.0) -> None:
        """Eigendecompose ``gram[index] + shift I`` (``gram`` may hold ``G - shift I``)."""
        if len(index) == 0:
            return
        values = torch.linalg.eigvalsh(gram[index]) + shift
        at = int(values[:, -1].argmax())
        top = float(values[at, -1])
        low = values[:, 0].cpu()
        with self.lock:
            if top > self.b:  # remember where: the start of an iterative solve
                self.b, self.b_key = top, keys[int(index[at])]
            if self.need_min:
                self.candidates += [(v, keys[i]) for i, v in zip(index.tolist(), low.tolist())]
                self.a = min(self.a, float(low.min()))

    @staticmethod
    def _sample(index: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        order = torch.randperm(len(index), generator=generator)[:count]
        return index[order.to(index.device)]

    def update(self, gram: torch.Tensor, keys: list, seed: int = 0) -> None:
        """Fold in a block ``(F, n, n)`` of Gram matrices (overwritten); ``keys[i]`` names
        matrix ``i``."""
        count, n = gram.shape[0], gram.shape[-1]
        generator = torch.Generator().manual_seed(seed)
        with self.lock:
            self.size = max(self.size, n)
        everything = torch.arange(count, device=gram.device)
        if n <= _DIRECT_GRAM_SIZE:  # small matrices: decomposing is as cheap as certifying
            self._exact(gram, everything, keys)
            return
        diag = gram.diagonal(dim1=-2, dim2=-1).real
        trace, diag_max = diag.sum(dim=1), diag.max(dim=1).values  # lambda_max in [max, sum]
        diag_min = diag.min(dim=1).values  # >= lambda_min
        # --- the top: decompose the most promising matrix, certify the rest ---
        best = diag_max.argmax().reshape(1)
        self._exact(gram, best[diag_max[best] > self.b], keys)
        # certify in single precision when computing in double: a 2x cheaper factorisation,
        # and the top of the spectrum only needs a relative accuracy near 1e-4 to prune
        low = torch.complex64 if gram.dtype == torch.complex128 else gram.dtype
        b = self.b  # one threshold for the whole test (other threads may raise self.b)
        margin = self.margin(n, torch.float32 if low == torch.complex64 else None, b=b)
        todo = everything[trace > b - margin]
        if len(todo):
            shifted = (gram if len(todo) == count else gram[todo]).to(low, copy=True)
            shifted.neg_()
            shifted.diagonal(dim1=-2, dim2=-1).add_(b - margin)
            self._exact(gram, todo[torch.linalg.cholesky_ex(shifted)[1] != 0], keys)
            del shifted
        if not self.need_min:
            return
        # --- the bottom ---
        if math.isinf(self.a):  # first block: seed with the smallest diagonal and a sample
            first = [diag_min.argmin().reshape(1), self._sample(everything, 1, generator)]
            self._exact(gram, torch.cat(first).unique(), keys)
        shift, pending = 0.0, None
        while True:
            target = self.a + self.margin(n)
            if pending is None:  # the whole block, shifted in place
                gram.diagonal(dim1=-2, dim2=-1).sub_(target)
                shift = target
                pending = everything[torch.linalg.cholesky_ex(gram)[1] != 0]
            else:
                shifted = gram[pending]
                shifted.diagonal(dim1=-2, dim2=-1).sub_(target - shift)
                pending = pending[torch.linalg.cholesky_ex(shifted)[1] != 0]
            if len(pending) <= 4:
                self._exact(gram, pending, keys, shift)
                return
            # many below the threshold: lower it with a few exact values and retest;
            # when that does not lower it they all sit at the minimum: decompose them
            before = self.a
            self._exact(gram, self._sample(pending, 2, generator), keys, shift)
            if not self.a < before:
                self._exact(gram, pending, keys, shift)
                return


def _fft_bounds(op: ConvOperator, *, spectrum: bool) -> FrameBounds:
    parts = op.split_groups()
    eps = torch.finfo(op.weight.dtype).eps
    input_dim = math.prod(op.in_shape)
    if float(op.weight.abs().max()) == 0:
        values = np.zeros(input_dim) if spectrum else None
        return FrameBounds(0.0, 0.0, "fft-svd" if spectrum else "fft", 0.0, True, input_dim,
                           values)  # fmt: skip
    if spectrum:
        return _fft_spectrum(parts, eps, input_dim)
    size, a_value, b_value, a_values = 1, math.inf, 0.0, []
    for g, part in enumerate(parts):
        m = part.out_channels
        n = part.in_channels * part.stride[0] * part.stride[1]
        wide = m < n
        size = max(size, min(m, n))
        if part.kernel_size == (1, 1) and part.stride == (1, 1):
            # K(w) = W e^{i phi(w)} at every frequency: one small SVD settles it
            s = torch.linalg.svdvals(part.weight[:, :, 0, 0]) ** 2
            b_value = max(b_value, float(s.max()))
            a_values.append(0.0 if wide else float(s.min()))
            continue
        state = _fft_extremes(part, g, need_min=not wide)
        b_value = max(b_value, state.b)
        if wide:
            a_values.append(0.0)
        else:
            a_values.append(_refine_min(part, state))
    tol = 16 * size * eps * b_value
    a_value = max(0.0, min(a_values))
    return FrameBounds(a_value, b_value, "fft", tol, True, input_dim)


def _fft_extremes(part: ConvOperator, g: int = 0, *, need_min: bool) -> _Extremes:
    """The certified extreme eigenvalues of one group's Gram matrices ``K(w)^H K(w)``."""
    m = part.out_channels
    n = part.in_channels * part.stride[0] * part.stride[1]
    wide = m < n
    # a wide K(w) has n - m zero eigenvalues: the smaller Gram K K^H holds the rest
    state = _Extremes(need_min=need_min and not wide, dtype=part.weight.dtype)
    # stride 1: the Gram matrices are the symbol of T^T T, a circular conv with the
    # filters' autocorrelation; cheaper than K^H K unless there are few frequencies
    kh, kw = part.kernel_size
    frequencies = part.polyphase_size[0] * (part.polyphase_size[1] // 2 + 1)
    cheaper = 4 * frequencies > kh * kw * (2 * kh - 1) * (2 * kw - 1)
    use_autocorrelation = part.stride == (1, 1) and not wide and cheaper
    gram_op = _autocorrelation_operator(part) if use_autocorrelation else None
    k = min(m, n)
    itemsize = 16 if part.weight.dtype == torch.float64 else 8
    per_frequency = itemsize * (3 * k * k + (0 if gram_op else m * n))
    # each symbol evaluation also costs about a complex copy of its weight: amortise it
    source = gram_op if gram_op is not None else part
    overhead = 2 * itemsize * source.weight.numel()
    mw = part.polyphase_size[1] // 2 + 1

    def block(rows, g=g, part=part, gram_op=gram_op, state=state, wide=wide, k=k, mw=mw):
        if gram_op is not None:
            gram = gram_op.symbol(rows)
        else:
            sym = part.symbol(rows)
            gram = sym @ sym.mH if wide else sym.mH @ sym
            del sym
        keys = [(g, r, c) for r in rows for c in range(mw)]
        state.update(gram.reshape(-1, k, k), keys, seed=rows[0])

    flops = 4 * frequencies * k**3  # two Cholesky factorisations per frequency
    chunks = list(_row_chunks(part, per_frequency, overhead))
    _in_parallel(block, chunks, part.weight.device, flops)
    return state


def _refine_min(part: ConvOperator, state: _Extremes) -> float:
    """``A`` of one group from singular values of ``K(w)`` at the minimising frequencies."""
    margin = 2 * state.margin(state.size)
    near = sorted(c for c in state.candidates if c[0] <= state.a + margin)
    # a flat minimum (many frequencies within rounding of it): any of them will do
    near = [key for _, key in near[:64]]
    if not near:
        return state.a
    best = math.inf
    by_row: dict[int, list[int]] = {}
    for _, r, c in near:
        by_row.setdefault(r, []).append(c)
    rows = sorted(by_row)
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        sym = part.symbol(chunk)
        for i, r in enumerate(chunk):
            s = torch.linalg.svdvals(sym[i, by_row[r]])
            best = min(best, float(s[..., -1].min()) ** 2)
    return best


def _fft_spectrum(parts: list[ConvOperator], eps: float, input_dim: int) -> FrameBounds:
    pieces, size = [], 1
    for part in parts:
        m = part.out_channels
        n = part.in_channels * part.stride[0] * part.stride[1]
        size = max(size, n)
        weights = _column_weights(part).to(part.weight.device)
        per_frequency = (16 if part.weight.dtype == torch.float64 else 8) * 2 * m * n
        for rows in _row_chunks(part, per_frequency):
            s2 = torch.linalg.svdvals(part.symbol(rows)) ** 2  # (R, Fw, min(m, n))
            s2 = s2.repeat_interleave(weights, dim=1).reshape(-1)
            pieces.append(s2.to("cpu", torch.float64))
            if m < n:
                zeros = len(rows) * int(weights.sum()) * (n - m)
                pieces.append(torch.zeros(zeros, dtype=torch.float64))
    values = torch.cat(pieces).sort().values.numpy()
    assert len(values) == input_dim, (len(values), input_dim)
    b_value = float(values[-1])
    a_value = max(0.0, float(values[0]))
    return FrameBounds(a_value, b_value, "fft-svd", 16 * size * eps * b_value, True, input_dim,
                       values)  # fmt: skip


# --- zero padding: dense and Lanczos, by the one eigenvalue engine -----------------------


def _normal_matvec(part: ConvOperator):
    """``T^T T`` of one group as the engine's batched ``matvec`` (one operator)."""
    return lambda v: part.normal(v.to(part.weight.dtype))


def _dense_bounds(op: ConvOperator, *, spectrum: bool) -> FrameBounds:
    eps = torch.finfo(op.weight.dtype).eps
    pieces, size = [], 1
    for part in op.split_groups():
        n_in, n_out = math.prod(part.in_shape), math.prod(part.out_shape)
        spec = extreme_eigenvalues(_normal_matvec(part), part.in_shape, method="dense",
                                   dtype=part.weight.dtype, device=part.weight.device)  # fmt: skip
        values = spec.values[0].clamp_min(0)
        if n_out < n_in:  # rank <= n_out: these zeros are structural
            values[: n_in - n_out] = 0
        pieces.append(values)
        size = max(size, n_in)
    values = torch.cat(pieces).sort().values.numpy()
    a_value, b_value = float(values[0]), float(values[-1])
    return FrameBounds(a_value, b_value, "dense", 16 * size * eps * b_value, True,
                       math.prod(op.in_shape), values if spectrum else None)  # fmt: skip


def _lanczos_bounds(op: ConvOperator, *, rtol: float, max_iter: int | None) -> FrameBounds:
    """Lanczos from a random start in float64 (the engine as it is); an end that misses
    ``rtol`` is reported as nan with a :class:`FrameBoundsWarning`."""
    max_iter = _LANCZOS_ITER if max_iter is None else max_iter
    a_value, b_value, tol, converged = math.inf, 0.0, 0.0, True
    for g, part in enumerate(op.split_groups()):
        wide = math.prod(part.out_shape) < math.prod(part.in_shape)
        spec = extreme_eigenvalues(
            _normal_matvec(part), part.in_shape, method="lanczos", smallest=not wide,
            tol=rtol, max_iter=max_iter, dtype=torch.float64, device=part.weight.device,
            start=g,
        )  # fmt: skip
        residuals = [float(spec.residual_largest[0])]
        hi_ok = float(spec.residual_largest[0]) <= rtol * float(spec.largest[0])
        b_value = max(b_value, float(spec.largest[0])) if hi_ok else math.nan
        if wide:
            a_value = 0.0  # rank <= n_out < n_in: a structural kernel
        elif bool(spec.converged[0]):
            a_value = min(a_value, float(spec.smallest[0]))
            residuals.append(float(spec.residual_smallest[0]))
        else:
            a_value = math.nan
        tol = max(tol, *residuals)
        if not (hi_ok and (wide or bool(spec.converged[0]))):
            converged = False
            warnings.warn(
                f"Lanczos for the extreme eigenvalues of T^T T did not converge within "
                f"{max_iter} products (group {g}); what missed rtol is reported as nan "
                f"(raise max_iter, loosen rtol, or use method='dense' on a smaller input)",
                FrameBoundsWarning,
                stacklevel=3,
            )
    return FrameBounds(a_value, b_value, "lanczos", tol, converged, math.prod(op.in_shape))


# --- zero padding, large inputs: 1x1 kernels exactly, the rest by Lanczos ---------------


def _pointwise_bounds(op: ConvOperator, *, spectrum: bool) -> FrameBounds:
    """A 1x1 kernel with zero padding, exactly: ``T^T T`` is block diagonal over the pixels.

    Output ``j`` reads the single pixel ``s j - p`` (per axis), so ``T^T T`` is ``W^T W``
    on every pixel that some output reads and ``0`` on the others (stride ``s > 1``
    skips pixels: ``A = 0``); the spectrum is that of ``W^T W`` repeated once per read
    pixel, plus zeros.
    """
    read = 1
    for n, s, p, m in zip(op.input_size, op.stride, op.padding, op.output_size):
        read *= sum(1 for j in range(m) if 0 <= s * j - p < n)
    pixels = math.prod(op.input_size)
    eps = torch.finfo(op.weight.dtype).eps
    pieces, size = [], 1
    for part in op.split_groups():
        w = part.weight[:, :, 0, 0]
        c = w.shape[1]
        size = max(size, c)
        s2 = torch.linalg.svdvals(w).to("cpu", torch.float64) ** 2  # more accurate than eigvalsh
        values = torch.cat([s2, torch.zeros(c - len(s2), dtype=torch.float64)])
        pieces.append((values, c))
    b_value = max(float(v.max()) for v, _ in pieces)
    a_value = 0.0 if read < pixels else min(float(v.min()) for v, _ in pieces)
    values = None
    if spectrum:
        values = (
            torch.cat(
                [v.repeat(read) for v, _ in pieces]
                + [torch.zeros(c * (pixels - read), dtype=torch.float64) for _, c in pieces]
            )
            .sort()
            .values.numpy()
        )
    return FrameBounds(a_value, b_value, "1x1", 16 * size * eps * b_value, True,
                       math.prod(op.in_shape), values)  # fmt: skip


def _enclosing_torus(op: ConvOperator) -> ConvOperator:
    """A circular operator ``T_c`` with ``T = R T_c P`` for the zero-padded ``T`` (one group).

    ``P`` embeds the ``N``-pixel input in a torus of ``M >= N + p`` pixels (zeros after
    it), ``R`` keeps the outputs of ``T``: every tap of an output of ``T`` reads index
    ``t`` in ``[-p, N + p - 1]``, and with ``M >= N + p`` the wrapped index ``t mod M``
    lies in ``[0, N)`` exactly when ``t`` does. Hence ``||T x|| <= ||T_c P x||`` and
    ``B <= B(T_c)``: an upper bound from the exact Fourier method.
    """
    size = []
    for n, s, p, m in zip(op.input_size, op.stride, op.padding, op.output_size):
        need = max(n + p, s * m, 1)
        size.append(s * -(-need // s))  # a multiple of the stride
    return ConvOperator(op.weight, tuple(size), stride=op.stride, padding=op.padding,
                        padding_mode="circular", dilation=op.dilation)  # fmt: skip


def _plane_wave(op: ConvOperator, torus: ConvOperator, key) -> torch.Tensor | None:
    """The top singular vector of ``torus``'s symbol at frequency ``key`` as a plane wave on
    ``op``'s input, tapered by a sine window (the lowest Dirichlet mode): its Rayleigh
    quotient is ``B(T_c) - O(1 / N^2)`` when ``torus`` is large, a start for Krylov."""
    if key is None:
        return None
    _, r, c = key
    sym = torus.symbol([r])[0, c]  # (C_out, C_in s_h s_w)
    u = torch.linalg.svd(sym.to(torch.complex128))[2][0].conj().cpu()  # top right singular vector
    (sh, sw), (mh, mw), dtype = torus.stride, torus.polyphase_size, torch.float64
    h, w = op.input_size
    rows, cols = -(-h // sh), -(-w // sw)  # polyphase grid covering the input
    angle = 2 * math.pi * (r * torch.arange(rows, dtype=dtype)[:, None] / mh
                           + c * torch.arange(cols, dtype=dtype)[None, :] / mw)  # fmt: skip
    wave = u[:, None, None] * torch.polar(torch.ones_like(angle), angle)
    part = wave.real if float(wave.real.norm()) >= float(wave.imag.norm()) else wave.imag
    channels = part.shape[0] // (sh * sw)
    x = part.reshape(channels, sh, sw, rows, cols).permute(0, 3, 1, 4, 2)
    x = x.reshape(channels, rows * sh, cols * sw)[:, :h, :w]
    window = [torch.sin(math.pi * torch.arange(1, n + 1, dtype=dtype) / (n + 1)) for n in (h, w)]
    x = x * window[0][:, None] * window[1][None, :]
    norm = float(x.norm())
    return x / norm if norm > 0 else None


def _coarse_torus(op: ConvOperator) -> ConvOperator:
    """A circular operator on at most ``_COARSE`` frequencies per axis: where the symbol
    peaks, cheaply (the start of the Krylov solve needs no more)."""
    k = min(op.out_channels, op.in_channels * op.stride[0] * op.stride[1])
    grid = max(4, min(_COARSE, int(math.sqrt(_BRACKET_FLOPS / (2 * k**3)))))
    size = tuple(s * max(1, min(-(-n // s), grid)) for n, s in zip(op.input_size, op.stride))
    return ConvOperator(op.weight, size, stride=op.stride, padding=op.padding,
                        padding_mode="circular", dilation=op.dilation)  # fmt: skip


def _krylov_bounds(op: ConvOperator, *, rtol: float, max_iter: int | None) -> FrameBounds:
    """Zero padding, large inputs: one Lanczos run per group for both ends (module notes)."""
    max_iter = _KRYLOV_ITER if max_iter is None else max_iter
    # float32 products are accurate to about 1e-6 B: enough unless a tighter rtol is asked
    low = torch.float32 if rtol >= _FLOAT32_RTOL else torch.float64
    a_value, b_value, tol, converged = math.inf, 0.0, 0.0, True
    b_bound, steps = 0.0, 0
    for g, part in enumerate(op.split_groups()):
        n_in, n_out = math.prod(part.in_shape), math.prod(part.out_shape)
        need_min = n_out >= n_in  # else rank <= n_out < n_in: a structural kernel, A = 0
        fast = part.to(low)
        # B <= B(T_c) of an enclosing torus, exactly by FFT, where that is cheap
        torus = _enclosing_torus(part)
        m, n = torus.out_channels, torus.in_channels * torus.stride[0] * torus.stride[1]
        flops = 4 * torus.polyphase_size[0] * (torus.polyphase_size[1] // 2 + 1) * min(m, n) ** 3
        if flops <= _BRACKET_FLOPS:
            top = _fft_extremes(torus, need_min=False)
            b_upper = top.b + top.margin(top.size)
        else:
            top, b_upper = _fft_extremes(_coarse_torus(part), need_min=False), math.inf
            torus = _coarse_torus(part)
        start = _plane_wave(part, torus, top.b_key)
        generator = torch.Generator().manual_seed(g)
        noise = torch.randn(part.in_shape, generator=generator, dtype=torch.float64)
        # a random part: the smallest eigenvalue's eigenvectors are not plane waves
        q = noise / noise.norm() if start is None else start + 0.3 * noise / noise.norm()
        q = q.to(part.weight.device)
        spec = extreme_eigenvalues(
            _normal_matvec(fast), part.in_shape, method="lanczos", smallest=need_min,
            tol=rtol, floor=rtol, max_iter=max_iter, dtype=low, device=q.device, start=q[None],
        )  # fmt: skip
        theta = (float(spec.smallest[0]), float(spec.largest[0]))
        residual = (float(spec.residual_smallest[0]), float(spec.residual_largest[0]))
        k = spec.iterations
        steps = max(steps, k)
        noise_floor = _product_noise(part, low) * theta[1]
        b_value = max(b_value, theta[1])
        b_bound = max(b_bound, b_upper)
        # B in [theta, b_upper] (rigorous), and an eigenvalue lies within the residual
        error_b = min(max(0.0, b_upper - theta[1]), residual[1]) + noise_floor
        errors = [error_b]
        if need_min:
            a_value = min(a_value, max(0.0, theta[0]))
            errors.append(residual[0] + noise_floor)
        else:
            a_value = 0.0
        tol = max(tol, *errors)
        converged &= max(errors) <= rtol * b_value
    if not converged:
        warnings.warn(
            f"Lanczos did not reach rtol={rtol:g} within {max_iter} products: A is an upper "
            f"bound (a Ritz value) and B a lower bound, each within {tol:.2e} of an eigenvalue "
            f"(raise max_iter, or use method='dense' on a smaller input)",
            FrameBoundsWarning,
            stacklevel=3,
        )
    return FrameBounds(a_value, b_value, "krylov", tol, converged, math.prod(op.in_shape),
                       B_upper=b_bound if math.isfinite(b_bound) else None)  # fmt: skip


def _product_noise(part: ConvOperator, dtype: torch.dtype) -> float:
    """Relative rounding error of a product ``T^T T x`` (an estimate: ``sqrt(L) eps``
    for sums of ``L`` terms with independent rounding errors, twice)."""
    terms = part.weight[0].numel() * max(1, part.out_channels // part.in_channels)
    return 2 * math.sqrt(part.weight[0].numel() + terms) * torch.finfo(dtype).eps


# --- models ----------------------------------------------------------------------------


def check_model(model) -> nn.Module:
    """``model`` itself if it is an ``nn.Module``; a ``TypeError`` that says what to do if not."""
    if isinstance(model, nn.Module):
        return model
    hint = " (load a spec with invert.load_model(spec) first)" if isinstance(model, str) else ""
    raise UserTypeError(f"expected an nn.Module; got {type(model).__name__}{hint}")


def gaussian_like(weight: torch.Tensor, seed: int) -> torch.Tensor:
    """The random baseline: Gaussian filters of ``weight``'s shape, each with its filter's norm.

    Examples
    --------
    >>> w = torch.ones(2, 1, 2, 2)
    >>> [round(n, 12) for n in gaussian_like(w, 0).flatten(1).norm(dim=1).tolist()]
    [2.0, 2.0]
    """
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    flat = random.reshape(weight.shape[0], -1)
    target = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
    flat = flat * (target / flat.norm(dim=1, keepdim=True))
    return flat.reshape(weight.shape)

"""Joint inversion: the input from a deep layer's features through every layer at once.

:func:`~invert.reconstruction.reconstruct_joint` (in :mod:`.strategies`) solves, for each
image,

    min_x  ||r(x)||^2 / ||t||^2  [+ w TV_eps(x)]   subject to  lo <= x <= hi  (optional)

where ``r`` is the residual of the model's own map to the layer
(:class:`~invert.reconstruction.layer_map.LayerMap`: the pre-activation for a CReLU layer,
active units for a ReLU layer, max-pooling held at the recorded switches by default).
This goes beyond the paper, which inverts one layer at a time: a layer that is not a
frame (fewer outputs than inputs) loses part of *its* input, but the composite map from
the image can still be injective, and then the image comes back exactly.

Method: projected Gauss-Newton with a backtracking (Armijo) line search, each image its
own problem (its own residual, step length and stopping). The Gauss-Newton step solves
``min_d ||J d + r||^2`` (plus the prior's rows) matrix-free with CGLS
(:func:`~invert.linalg.solvers.least_squares`) on ``jvp``/``vjp`` of the map (see
:meth:`LayerMap.linearize <invert.reconstruction.layer_map.LayerMap.linearize>`), started
from 0 (the minimum-norm step where ``J`` has a kernel), to the per-image relative
normal-equation residual ``eta`` of Eisenstat and Walker (1996, choice 2):
``eta = clip(0.9 (|g_k| / |g_{k-1}|)^2, 1e-10, 0.1)`` with ``g`` the (projected)
gradient -- loose while the activation pattern is still wrong, tight as the solve
converges; a loose step that gains nothing is retried at ``1e-10``. With a
box, variables at a bound whose gradient points outwards are held fixed for the step
(Bertsekas' projected Newton) and every trial point is projected onto the box.

An image stops as ``converged`` when its relative feature residual is at ``tol``;
``stationary`` when its projected gradient has fallen to ``1e-11`` of its first value
(steps are solved no more accurately than that needs: CGLS cannot beat roundoff) or an
exact step gains less than ``1e-14`` of the objective (features no input fits, an
infeasible box, the prior's optimum); ``stalled`` when no step length is accepted or five
steps cut the feature residual by less than a fifth (with a prior: gained less than 1% of
the objective) -- a local minimum or a crawl; a solve heading for zero residual does
better (the slowest seen, ConvPool-C CReLU conv4, cut it 1.7x per five steps before its
quadratic phase): the problem is not convex, and a start far from the input (e.g.
the layer-wise estimate of a narrow random network, or a layer deep past a max-pool) can
end in one; or after ``max_steps``. The status is in ``rec.status`` and the
certificate's note.

Where the time goes (profile, VGG-16 ``features.8``, 2 CPU cores, float64 solve): at 64 px,
4.5 s = layer-wise start 0.5 s + Gauss-Newton 2.6 s (16 steps, 274 CGLS iterations, each
one ``jvp`` and one ``vjp`` in float32) + certificate 1.4 s; at 224 px, 102-120 s = start
2 s + Gauss-Newton 65-79 s (38 steps of 1.7-2.1 s: CGLS 1.4-1.7 s, the float64 line search
0.27 s) + certificate 34-38 s (about 270 Lanczos products: the smallest eigenvalue needs
them, see :mod:`.certificate`; 26-32 s since 2026-12-06). Every step takes the full step
(length 1); the residual falls only 1.1-1.5x per step at first (the hidden ReLUs'
activation pattern is being found: on ``features.8`` at 64 px 17% of the first ReLU's units
have the wrong sign after one step, 1.4% after twelve), then quadratically. That phase is
the nonlinearity, and none of these shortened it (measured at 64 px, 16 steps as the
reference): steps solved 10x tighter (16 steps, 1.6x the CG iterations) or 3-6x looser
(20-21 steps); a better start (the true image blurred by a 9x9 box: 18 steps; the
``"naive"`` walk: 26; grey: stalls near 0.2); Anderson acceleration of the steps (its point
never beat the Gauss-Newton point); secant slopes of the hidden ReLUs in place of their 0/1
derivatives (21 steps); leaving out the rows of inactive units (18 steps); doubling an
accepted full step (never lowered the objective). An oracle shows why: with the hidden
ReLUs held at the true image's activation pattern (each made a fixed 0/1 mask), all three
(``features.1``, ``.3``, ``.6``) take 6 steps, ``.1`` and ``.3`` 8, any one alone 12-18;
the steps are spent finding the patterns of every hidden layer at once, which no start
short of the true image has. So the cost of a step is what is cut: CGLS takes its products
from a float32 twin of the map, linearised once per step at the same point (a float32 conv
costs a third to a fifth of a float64 one on the CPU), each step solved to ``eta >= 1e-4``;
the gradient is ``J^T r`` of the float64 residual ``r`` of the line search, which stays
float64. This is mixed-precision iterative refinement: a float32 step is an inexact Newton
step (relative error ~1e-6, inside the forcing term), and once the activation pattern is
right each step cuts the float64 residual about 1e4-fold, so the converged image and the
certificate are those of the float64 map. An image whose float32 step fails, or whose
gradient has fallen 100x more than its residual (a fit that cannot meet the features, where
float32 products cannot resolve ``J^T r``), goes on in float64, with steps solved to
``1e-10``. Two more cuts (2-core Xeon with AMX, 2026-12-05; ``features.8`` at 224 px 99 s
-> 89 s, Gauss-Newton 64 s -> 54 s): while every residual is above ``1e-3`` the whole step
is float32 -- line search, residual and CGLS recurrences -- since the twin's rounding
(2.7e-7 of the features, measured) is under a thousandth of the residual there, and a
float64 forward pass costs 4-7 float32 ones (no fast float64 conv kernel on the CPU); and a
step stops once its linear model meets half the tolerance (CGLS's ``residual_tol``, LSQR's
``btol``): the last step took 78 CGLS iterations to land at 2e-13 where 34 reach 5e-11 <=
``tol``. Windowed steps (:mod:`.window`, 2026-12-06): late in the float32 phase the
residual is local (``features.8`` at 224 px: 99% of its energy in a quarter of the feature
map from step 14 of 39, in 1/32 of it from step 20), and such a step is taken on a crop
around it -- block-coordinate Gauss-Newton, exact on the inputs that feed the residual --
at a fraction of the cost: Gauss-Newton 55.6-56.4 s -> 43.4-46.9 s, the same 39 steps (17
of them windowed, on 8-47% of the image), back to back in one process. Not in the float64
phase, where the residual is spread again (a windowed step there cost a step: 40 against
39). Measured and not kept: a circulant (FFT) preconditioner from the point-spread function
of ``J^T J`` and a Jacobi one from 20 probes both need more CGLS iterations than none (at
224 px, to 0.1: 15-40 and 7 against 4-5); the map's conditioning is spatially varying, not
spectral. Nor did (64 px, 2026-12-06) warm-starting each step's CGLS from the last step
(357-395 iterations against 262) or a looser cap on the forcing term (0.2-0.5: 231-257
iterations in 18-21 steps). Nor did any of these cut the 16 steps (64 px, same day): lifted
Gauss-Newton (Albersmeyer and Diehl 2010; the hidden pre-activations as unknowns, moved by
the linear model, their masks from those values: 18 steps); Cauchy IRLS weights on the
residual rows (28 steps, or stalls); the best of the step lengths 0.5, 0.7, 0.85, 1 and 1.2
(1 at every step: the activation patterns limit the direction, not its length); leaky
derivatives 0.05 and 0.2 for the inactive hidden units (19 and 32 steps). At 224 px: one
window per patch of residual in place of one per image (46.4 s, 40 steps: no gain), a 95%
or 99.9% window share (51.2 and 47.3 s against 48.5 s: noise), the float32 twin in
channels_last (a product 0.096 s against 0.091 s), two products batched (no gain in
throughput on the CPU).

Counting first (:func:`injectivity`): where ``rank(J) <= min(compared rows, the size of
every place all paths pass through) < n`` (e.g. ResNet-18 ``layer2``, AlexNet
``features.4``: fewer numbers than the image) no solve can single out the input; the
result says so in ``rec.note`` and, without a prior and an explicit
``max_steps``, the solve stops after five steps (status ``"not injective"``). With
``prior="tv"`` it runs to the prior's optimum.

Prior (``prior="tv"``, off by default): a smoothed isotropic total variation of the
model's input in units of its side, ``TV_eps(x) = s mean_p sqrt(|grad x|_p^2 + eps^2)``
(forward differences per channel, ``eps = 1e-3``, ``s = sqrt(H W)``), handled by
lagged-diffusivity (IRLS) rows ``sqrt(w s / (2 P q_p)) grad`` in the same least-squares
step. The factor ``s`` makes a weight mean the same at any size: a smooth image's mean
pixel difference falls as ``1 / s``, so without it a weight tuned at 64 px was 3.5x weaker
at 224 px (ResNet-18 ``layer2`` at 224 px: 11.3 dB against 22.6 dB with it, the Adam
reference 18.6 dB; ``bench/real_networks.py``). It is a prior -- it picks one
of the inputs that explain the features where the map is not injective (``A = 0``) -- and
such results are never certified unique.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from invert.errors import UserError, UserTypeError
from invert.linalg.solvers import ConvergenceWarning, least_squares
from invert.nn.net import Normalize
from invert.progress import progress_bar
from invert.validation import check_bool, check_dtype

from .certificate import certify
from .features import Features
from .layer_map import Linearization, check_jacobian
from .layerwise import walk_notes, walk_start
from .result import Note, Reconstruction
from .settings import JointSettings, LayerwiseSettings, feature_tol, settings_of
from .window import Windows

__all__ = ["JointSolve", "finish", "solve_joint", "solve_notes"]

_PRIORS = (None, "tv")
_TV_EPS = 1e-3
_ARMIJO = 1e-4
_GTOL = 1e-11  # relative projected gradient at which a solve is stationary
_ETA_MIN = 1e-10  # the tightest relative tolerance of a Gauss-Newton step
_ETA_MAX = 0.1  # the loosest (tighter does not shorten the first, nonlinear phase)
_WINDOW = 5  # steps over which a solve must show progress
_HALVINGS = 30
_INNER32_ETA = 1e-4  # the tightest step solved with float32 Jacobian products
_OFF_RANGE = 1e-2  # gradient / residual fall at which float32 products stop
_COARSE = 1e-3  # relative residual above which the whole step runs in float32
_MAX_STEPS = 50  # default Gauss-Newton steps
_NOT_INJECTIVE_STEPS = 5  # default steps for a map that counting shows is not injective


# --- the prior: smoothed total variation ------------------------------------------------------


def _grad(x):
    return (F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1)),
            F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1)))  # fmt: skip


def _grad_adjoint(gx, gy):
    gx, gy = gx[..., :, :-1], gy[..., :-1, :]
    return F.pad(gx, (1, 0)) - F.pad(gx, (0, 1)) + F.pad(gy, (0, 0, 1, 0)) - F.pad(gy, (0, 0, 0, 1))


def _tv(x):
    gx, gy = _grad(x)
    q = gx**2 + gy**2 + _TV_EPS**2
    return torch.sqrt(q).flatten(1).mean(1), q


# --- one Gauss-Newton step ------------------------------------------------------------------


class _Step:
    """The least-squares operator of one Gauss-Newton step: ``[J / s; c grad] (free * d)``.

    ``lin``'s products may be taken in float32 (:func:`_promoted`).
    """

    def __init__(self, lm, x, lin, scale, free, tv_rows):
        self.lm, self.x, self.lin = lm, x, lin
        self.scale, self.free, self.tv = scale, free, tv_rows
        self.in_shape = tuple(x.shape[1:])
        m = lm.target[0].numel() + (2 * x[0].numel() if tv_rows is not None else 0)
        self.out_shape = (m,)
        self._dims = lm.target.dim() - 1

    def _s(self):
        return self.scale.view(-1, *([1] * self._dims))

    def apply(self, d):
        d = d * self.free if self.free is not None else d
        jd = self.lin.jvp(d)
        out = (jd / self._s()).flatten(1)
        if self.tv is None:
            return out
        gx, gy = _grad(d)
        return torch.cat([out, (self.tv * gx).flatten(1), (self.tv * gy).flatten(1)], 1)

    def adjoint(self, u):
        k = self.lm.target[0].numel()
        shape = (u.shape[0], *self.lm.target.shape[1:])
        w = u[:, :k].reshape(shape) / self._s()
        g = self.lin.vjp(w)
        if self.tv is not None:
            p = self.x[0].numel()
            gx = u[:, k : k + p].reshape(self.x.shape) * self.tv
            gy = u[:, k + p :].reshape(self.x.shape) * self.tv
            g = g + _grad_adjoint(gx, gy)
        return g * self.free if self.free is not None else g


def _promoted(lin32, r) -> Linearization:
    """A float32 linearization with the residual ``r`` of the float64 map at the same point:
    products taken in float32 and returned in ``r``'s dtype (see the module notes)."""
    low, high = lin32.r.dtype, r.dtype
    return Linearization(r, lambda v: lin32.jvp(v.to(low)).to(high),
                         lambda u: (lin32.vjp(u.to(low)).to(high),))  # fmt: skip


def _objective(lm, x, idx, weight):
    """Per-image objective, relative residual, residual, in ``x``'s dtype; under no_grad.
    ``lm`` may be a twin in another precision (the values are then its rounding)."""
    r = lm.residual(x.to(lm.dtype), idx).to(x.dtype)
    rel = lm.relative(r, idx)
    phi = rel**2
    if weight:
        phi = phi + weight * _tv(x)[0]
    return phi, rel, r


def _gradient(lin, x, scale, weight):
    r = lin.r
    s = scale.view(-1, *([1] * (r.dim() - 1))).to(r.dtype)
    g = 2 * lin.vjp(r / s**2).to(x.dtype)
    if weight:
        gx, gy = _grad(x)
        q = torch.sqrt(gx**2 + gy**2 + _TV_EPS**2) * x[0].numel()
        g = g + weight * _grad_adjoint(gx / q, gy / q)
    return g


def _free_set(x, g, lo, hi):
    if lo is None:
        return None
    span = (hi - lo).clamp(min=1.0)
    at_lo = (x <= lo + 1e-12 * span) & (g > 0)
    at_hi = (x >= hi - 1e-12 * span) & (g < 0)
    return (~(at_lo | at_hi)).to(x.dtype)


def _line_search(lm, x, d, g, phi, r, idx, weight, lo, hi):
    """Per-image Armijo backtracking on the projected path from ``x`` (objective ``phi``,
    residual ``r``), the objective from ``lm`` (the map or its float32 twin); returns
    x_new, phi, rel, the residual there, alpha."""
    n = x.shape[0]
    alpha = torch.ones(n, dtype=x.dtype, device=x.device)
    new, phi_new, r_new = x.clone(), phi.clone(), r.clone()
    rel_new = torch.full_like(phi, math.nan)
    todo = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(_HALVINGS):
        t = todo.nonzero().flatten()
        a = alpha[t].view(-1, *([1] * (x.dim() - 1)))
        trial = x[t] + a * d[t]
        if lo is not None:
            trial = torch.maximum(torch.minimum(trial, hi), lo)
        p, rel, res = _objective(lm, trial, idx[t], weight)
        decrease = (g[t] * (trial - x[t])).flatten(1).sum(1)
        ok = p <= phi[t] + _ARMIJO * decrease
        good = t[ok]
        new[good], phi_new[good], rel_new[good] = trial[ok], p[ok], rel[ok]
        r_new[good] = res[ok]
        todo[good] = False
        alpha[t[~ok]] /= 2
        if not bool(todo.any()):
            break
    alpha[todo] = 0.0
    return new, phi_new, rel_new, r_new, alpha


def _direction(lm, xb, idx, lin, g, weight, lo, hi, eta, max_iter, enough=None):
    """The (projected) Gauss-Newton step for the images ``idx`` at ``xb``; ``enough``: per
    image, the relative linear residual at which the step may stop whatever ``eta``."""
    r = lin.r  # the step is solved in its dtype (float32 far from the features)
    free = _free_set(xb, g, lo, hi)
    tv_rows = None
    if weight:
        tv_rows = torch.sqrt(weight / (2 * xb[0].numel() * torch.sqrt(_tv(xb)[1])))

    def low(t):
        return None if t is None else t.to(r.dtype)

    scale = lm.scale[idx].to(r.dtype)
    op = _Step(lm, xb, lin, scale, low(free), low(tv_rows))
    rhs = (-r / scale.view(-1, *([1] * (r.dim() - 1)))).flatten(1)
    if tv_rows is not None:
        gx, gy = _grad(xb)
        rows = [-(tv_rows * gx).flatten(1), -(tv_rows * gy).flatten(1)]
        rhs = torch.cat([rhs, *map(low, rows)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        d, info = least_squares(op, rhs, tol=eta, max_iter=max_iter, residual_tol=enough)
    d = d.to(xb.dtype)
    return (d * free if free is not None else d), int(info.iterations.max())


def _norms(t):
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _forcing_term(gnorm, g_prev, g0, tight):
    """The relative tolerance of each image's step (Eisenstat-Walker, choice 2); 0 where an
    inexact step gained nothing, never tighter than the stop needs (roundoff caps CGLS)."""
    eta = 0.9 * (gnorm / g_prev) ** 2
    eta = torch.where(tight, torch.zeros_like(eta), eta)
    return torch.maximum(eta, 0.1 * _GTOL * g0 / gnorm).clamp(_ETA_MIN, _ETA_MAX)


def _judge(idx, accepted, decrease, eta, past, phi, rel, weight, tol, tight, running, status):
    """After a step: stop the images that are stationary or stalled, mark for an exact next
    step those whose inexact step gained nothing (edits ``tight``, ``running``, ``status``)."""
    slow = torch.zeros_like(rel, dtype=torch.bool)
    if len(past) > _WINDOW:
        phi_then, rel_then = past[-_WINDOW - 1]
        # a zero-residual solve converges superlinearly; with a prior the objective
        # has a floor, so only a gain of under 1% counts as no progress
        slow = (phi_then - phi) <= 1e-2 * phi_then if weight else rel_then < 1.25 * rel
    for j, i in enumerate(idx.tolist()):
        if not weight and float(rel[i]) <= tol:
            continue  # judged converged at the next step
        gained = bool(accepted[j]) and decrease[j] > 1e-14 * phi[i]
        if not gained and float(eta[j]) > _ETA_MIN:  # an inexact step failed: try an exact one
            tight[i] = True
        elif bool(accepted[j]) and not gained:
            running[i], status[i] = False, "stationary"
        elif not bool(accepted[j]) or bool(slow[i]):
            running[i], status[i] = False, "stalled"


def _retire(running, status, rel, tol, weight, capped) -> None:
    """Stop the images at ``tol`` (``"converged"``; not with a prior, whose optimum has a
    residual) and, given ``capped``, those whose step cap for a map that is not injective is
    spent (their status already says ``"not injective"``)."""
    for i in running.nonzero().flatten().tolist():
        if not weight and float(rel[i]) <= tol:
            running[i], status[i] = False, "converged"
        elif capped is not None and capped[i]:
            running[i] = False


def _gauss_newton(lm, x, *, tol, max_steps, max_iter, weight, lo, hi, bar, inner=None,
                  capped=None, windows=None):  # fmt: skip
    """The solve; ``inner``: a float32 twin of ``lm`` for the steps' products; ``capped``:
    per image, whether its ``max_steps`` is the cap of a map that is not injective (it then
    stops as ``"not injective"``, not ``"max_steps"``); ``windows``: :class:`Windows` for
    the float32 steps (see :mod:`.window`)."""
    n = x.shape[0]
    capped = [False] * n if capped is None else capped
    status = ["not injective" if c else "max_steps" for c in capped]
    running, history = torch.ones(n, dtype=torch.bool), []
    g0 = torch.zeros(n, dtype=x.dtype, device=x.device)
    g_prev = torch.zeros_like(g0)
    tight = torch.zeros(n, dtype=torch.bool, device=x.device)  # solve the next step exactly
    fine = torch.zeros(n, dtype=torch.bool, device=x.device)  # float64 products from now on
    r0 = torch.ones(n, dtype=x.dtype, device=x.device)  # the residual at the start
    past = []  # (objective, residual) after each step, for the progress rule
    with torch.no_grad():
        phi, rel, r = _objective(lm, x, lm.all, weight)
    for step in range(1, max_steps + 1):
        t0 = time.perf_counter()
        _retire(running, status, rel, tol, weight, capped if step > _NOT_INJECTIVE_STEPS else None)
        idx = running.nonzero().flatten().to(x.device)
        if not len(idx):
            break
        with torch.no_grad():
            xb = x[idx]
            # float32 products (see the module notes): the map is linearised once, in
            # float32, for the gradient and the step, with the line search's float64
            # residual -- or, above _COARSE, the whole step in float32
            lin32, coarse, area = None, False, 1.0
            if inner is not None and not bool(fine[idx].any()):
                coarse = bool((rel[idx] > _COARSE).all())
                if coarse and windows is not None:  # the step where the residual is
                    lin32 = windows.linearize(xb, idx, r[idx])
                    area = windows.area
                if lin32 is None:
                    lin32 = inner.linearize(xb.to(inner.dtype), idx)
                lin = lin32 if coarse else _promoted(lin32, r[idx])
            else:
                lin = lm.linearize(xb, idx)
            g = _gradient(lin, xb, lm.scale[idx], weight)
            gnorm = _norms(g if lo is None else g * _free_set(xb, g, lo, hi))
            if step == 1:
                g0[idx] = g_prev[idx] = torch.clamp(gnorm, min=torch.finfo(x.dtype).tiny)
            ratio = gnorm / g0[idx]
            flat = ratio <= _GTOL  # first-order stationary: no step would help
            if bool(flat.any()):
                for i in idx[flat].tolist():
                    running[i], status[i] = False, "stationary"
                continue
            eta = _forcing_term(gnorm, g_prev[idx], g0[idx], tight[idx])
            g_prev[idx] = torch.clamp(gnorm, min=torch.finfo(x.dtype).tiny)
            # float32 products until an image's inexact step fails, or its gradient has
            # fallen 100x more than its residual (the residual is leaving J's range, as in
            # a least-squares fit, and float32 products cannot resolve J^T r there; where
            # the features can be met the two fall together, within 3x)
            if step == 1:
                r0[idx] = rel[idx]
            fine[idx] |= tight[idx] | (ratio < _OFF_RANGE * rel[idx] / r0[idx])
            if lin32 is not None and bool(fine[idx].any()):  # this step already in float64
                lin, lin32, coarse = lm.linearize(xb, idx), None, False
                g = _gradient(lin, xb, lm.scale[idx], weight)
            if lin32 is not None:
                eta = eta.clamp(min=_INNER32_ETA)
            # a step whose linear model meets half the tolerance is enough (no prior: the
            # prior's optimum has a residual): the last step needs no tighter solve
            enough = None if weight else 0.5 * tol / rel[idx]
            d, iterations = _direction(lm, xb, idx, lin, g, weight, lo, hi, eta, max_iter,
                                       enough)  # fmt: skip
            new, phi_new, rel_new, r_new, alpha = _line_search(
                inner if coarse else lm, xb, d, g, phi[idx], r[idx], idx, weight, lo, hi
            )
        accepted = alpha > 0
        decrease = phi[idx] - phi_new
        x[idx[accepted]] = new[accepted]
        phi[idx[accepted]], rel[idx[accepted]] = phi_new[accepted], rel_new[accepted]
        r[idx[accepted]] = r_new[accepted]
        past.append((phi.clone(), rel.clone()))
        _judge(idx, accepted, decrease, eta, past, phi, rel, weight, tol, tight, running, status)
        dtype = str(x.dtype).replace("torch.", "")
        row = dict(gauss_newton_step=step, images=len(idx), residual=rel.cpu().tolist(),
                   objective=phi.cpu().tolist(), cg_iterations=iterations,
                   inner="float32" if lin32 is not None else dtype,
                   line_search="float32" if coarse else dtype, window=area,
                   step_length=float(alpha.min()), seconds=time.perf_counter() - t0)  # fmt: skip
        history.append(row)
        bar.update()
        bar.set_postfix_str(f"residual {float(rel.max()):.1e}")
    _retire(running, status, rel, tol, weight, None)
    return x, status, history


# --- start, bounds, validation ---------------------------------------------------------------


def check_bounds(bounds, lm):
    """The box as ``(lower, upper)`` tensors of the input's shape, validated; ``(None, None)``
    without one."""
    if bounds is None:
        return None, None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise UserTypeError("bounds must be a (lower, upper) pair, e.g. bounds=(0, 1)")
    to = dict(dtype=lm.dtype, device=lm.device)
    lo, hi = (torch.as_tensor(b, **to) for b in bounds)
    try:
        lo, hi = (b.expand(1, *lm.input_shape).clone() for b in (lo, hi))
    except RuntimeError:
        raise UserError(f"bounds must be numbers or broadcast to the input shape "
                         f"{lm.input_shape}") from None  # fmt: skip
    if torch.isnan(lo).any() or torch.isnan(hi).any() or bool((lo >= hi).any()):
        raise UserError(f"bounds must satisfy lower < upper everywhere; got {bounds}")
    return lo, hi


def _start(model, lm, feats, x0, lo, hi):
    """The starting image and where it came from."""
    shape = (lm.n_images, *lm.input_shape)
    if x0 is not None:
        if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != shape:
            raise UserError(f"x0 must be a tensor of shape {shape}; got "
                             f"{tuple(getattr(x0, 'shape', ()))}")  # fmt: skip
        x, how = x0.to(lm.device, lm.dtype).clone(), "x0"
    else:
        x, how = None, None
        if feats.chain:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    rec = walk_start(model, feats, LayerwiseSettings(), lm.dtype, lm.device)
                x, how = rec.image, "layerwise"
            except ValueError as error:
                how = f"mean (layer-wise start impossible: {error})"
        if x is None:
            x = torch.zeros(shape, dtype=lm.dtype, device=lm.device)
            norm = next((m for m in model.modules() if isinstance(m, Normalize)), None)
            if norm is not None:
                x = x + norm.mean.to(lm.device, lm.dtype).view(1, -1, *([1] * (x.dim() - 2)))
            how = how or ("mean of the model's Normalize" if norm is not None else "zeros")
    if not torch.isfinite(x).all():
        raise UserError("the starting image contains NaN or Inf")
    if lo is not None:
        x = torch.maximum(torch.minimum(x, hi), lo)
    return x, how


def _off_dead_point(lm, x, how, lo, hi):
    """A constant start can be a point where ``J = 0`` (a bias-free ReLU network such as
    ResNet at its Normalize mean: every unit exactly 0, every mask off) and the solve
    would stop there at once; such a start gets seeded noise, 0.1 of its spread."""
    with torch.no_grad():
        g = lm.linearize(x, lm.all)
        flat = _norms(g.vjp(g.r)) == 0
    if not bool(flat.any()):
        return x, how
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
    spread = 0.1 * (x.std() if float(x.std()) > 0 else x.abs().mean().clamp(min=1.0))
    x = torch.where(flat.view(-1, *([1] * (x.dim() - 1))), x + spread * noise, x)
    if lo is not None:
        x = torch.maximum(torch.minimum(x, hi), lo)
    return x, f"{how} + seeded noise (J = 0 there)"


def _notes(lm, x, status, lo, hi, weight):
    """Why each image is not certified, from the solve (None: nothing to say)."""
    notes, rank, n = [], lm.rank_bound(), math.prod(lm.input_shape)
    if all(s == "converged" or (weight and s != "not injective") for s in status):
        return [None] * len(status)  # nothing to say: no pass through the network for it
    with torch.no_grad():
        lin = lm.linearize(x, lm.all)
        g = _gradient(lin, x, lm.scale, weight)
        rel = lm.relative(lin.r, lm.all).cpu()
    free = _free_set(x, g, lo, hi)
    for i, state in enumerate(status):
        if state == "converged":
            notes.append(None)
            continue
        held = 0 if free is None else int((free[i] == 0).sum())
        if state == "not injective":
            notes.append(f"not injective: rank(J) <= {int(rank[i])} < {n} unknowns; stopped "
                         f"after {_NOT_INJECTIVE_STEPS} Gauss-Newton steps at residual "
                         f"{float(rel[i]):.1e} (no step count makes it unique)")  # fmt: skip
        elif held and not weight:
            notes.append(f"infeasible box: the best fit inside the bounds has residual "
                         f"{float(rel[i]):.1e}, with {held} inputs held at the bounds; the "
                         "features need values outside the box")  # fmt: skip
        elif not weight:
            notes.append(f"not converged ({state}): residual {float(rel[i]):.1e} reached")
        else:
            notes.append(None)
    return notes


# --- pieces shared with the dispatcher --------------------------------------------------------


@dataclass
class JointSolve:
    """What :func:`solve_joint` did: the images, per-image status and notes, the history."""

    x: torch.Tensor
    start: str
    status: list[str]
    notes: list[str | None]
    history: list[dict]
    seconds: float
    note: str | None = None
    max_steps: int = _MAX_STEPS

    @property
    def converged(self) -> list[bool]:
        return [s == "converged" for s in self.status]


def check_options(feats, *, prior, tol, joint, dtype, progress) -> tuple[JointSettings, float]:
    """Validate the joint solver's options; returns the settings and the feature tolerance."""
    if not isinstance(feats, Features):
        raise UserTypeError(f"expected Features from invert.reconstruction.features; got "
                            f"{type(feats).__name__}")  # fmt: skip
    if prior not in _PRIORS:
        raise UserError(f"prior must be None or 'tv'; got {prior!r}")
    check_dtype(dtype)
    check_bool(progress, name="progress")
    settings = settings_of(joint, JointSettings)
    return settings, feature_tol(tol, feats.activation.dtype, dtype)


def injectivity(lm, *, prior=None) -> tuple[list[bool], str | None]:
    """Per image, whether counting leaves the map to the layer possibly injective, and the
    note to give where it does not (``None`` when every image may be).

    ``rank(J) <= min(rows compared, the size of every place all paths pass through)``
    (:meth:`LayerMap.rank_bound`); below the input's size, ``J`` has a kernel at every
    point, so no solve can single out the input. Instant: no product with ``J``.
    """
    n = math.prod(lm.input_shape)
    rank = lm.rank_bound().tolist()
    ok = [r >= n for r in rank]
    if all(ok):
        return ok, None
    bad = [r for r, good in zip(rank, ok) if not good]
    what = f"{len(bad)} of {len(rank)} images: " if len(bad) < len(rank) else ""
    note = (f"not injective: {what}the map to {lm.layer!r} has rank <= {max(bad)} < {n} "
            f"input values (fewer numbers than the input), so the features do not determine "
            f"the image; ")  # fmt: skip
    if prior is None:
        note += (f"Gauss-Newton stops after {_NOT_INJECTIVE_STEPS} steps unless max_steps "
                 "is given; prior='tv' (crelu reconstruct --prior tv) gives the image the "
                 "prior picks")  # fmt: skip
    else:
        note += f"the image is the one the {prior!r} prior picks among those that fit"
    return ok, note


def solve_joint(lm, model, *, x0, bounds, prior, tol, settings: JointSettings, progress=False,
                inner_dtype="auto") -> JointSolve:  # fmt: skip
    """The projected Gauss-Newton solve on an entered :class:`LayerMap`.

    ``inner_dtype``: ``"auto"`` takes the steps' products in float32 when the solve is
    float64 (see the module notes); ``None``: all in ``lm.dtype``.
    """
    t0 = time.perf_counter()
    side = math.sqrt(math.prod(lm.input_shape[-2:]))  # TV in units of the image's side
    weight = settings.prior_weight * side if prior == "tv" else 0.0
    lo, hi = check_bounds(bounds, lm)
    injective, note = injectivity(lm, prior=prior)
    capped = [False] * len(injective)
    max_steps = settings.max_steps
    if max_steps is None:  # a map that is not injective gets a few steps, not minutes
        capped = [not (ok or weight) for ok in injective]
        max_steps = _MAX_STEPS if not all(capped) else _NOT_INJECTIVE_STEPS
    x, how = _start(model, lm, lm.feats, x0, lo, hi)
    if x0 is None and how != "layerwise":
        x, how = _off_dead_point(lm, x, how, lo, hi)
    check_jacobian(lm, x)
    with contextlib.ExitStack() as stack:
        inner = windows = None
        if inner_dtype == "auto" and lm.dtype == torch.float64:
            inner = stack.enter_context(lm.twin(torch.float32))
            if not weight:
                windows = Windows(lm, inner)
                stack.callback(windows.close)
        bar = stack.enter_context(progress_bar(progress, total=max_steps, desc="Gauss-Newton",
                                               unit="step"))  # fmt: skip
        x, status, history = _gauss_newton(
            lm, x, tol=tol, max_steps=max_steps, max_iter=settings.cg_iterations,
            weight=weight, lo=lo, hi=hi, bar=bar, inner=inner, capped=capped, windows=windows,
        )  # fmt: skip
    notes = _notes(lm, x, status, lo, hi, weight)
    return JointSolve(x, how, status, notes, history, time.perf_counter() - t0, note, max_steps)


def solve_notes(solve: JointSolve, residual, tol: float, prior, images=None) -> list[Note]:
    """What to know about the joint solve of ``images`` (default: all): the counting note,
    and for each way of stopping short, its cause and the setting that acts on it."""
    images = range(len(solve.status)) if images is None else images
    notes = []
    if solve.note:
        notes.append(
            Note(solve.note)
            if prior
            else Note(
                solve.note.split("; ")[0],
                option="prior",
                advice="no step count makes it unique; {option} gives the image the prior picks",
            )
        )
    if prior:
        return notes
    by_status: dict[str, list[int]] = {}
    for i in images:
        by_status.setdefault(solve.status[i], []).append(i)
    for state, which in by_status.items():
        worst = max(float(residual[i]) for i in which)
        what = (
            f"{len(which)} of {len(solve.status)} images"
            if len(which) < len(solve.status)
            else "the images"
        )
        if state == "max_steps":
            notes.append(
                Note(
                    f"the joint solve of {what} used all {solve.max_steps} Gauss-Newton steps and "
                    f"stopped at feature residual {worst:.1e} > tol {tol:.0e}",
                    option="joint.max_steps",
                    advice="raise {option}",
                )
            )
        elif state == "stalled":
            notes.append(
                Note(
                    f"the joint solve of {what} stalled at feature residual {worst:.1e} > tol "
                    f"{tol:.0e} (a local minimum, or under 1.25x progress in {_WINDOW} steps; more "
                    "steps do not help)",
                    option="prior",
                    advice="{option} gives a regularised image instead",
                )
            )
        elif state == "stationary":
            causes = sorted({solve.notes[i] for i in which if solve.notes[i]})
            notes.append(
                Note(
                    f"the joint solve of {what} reached a point where no step helps, "
                    f"at feature residual {worst:.1e} > tol {tol:.0e}"
                    + (f": {causes[0]}" if causes else "")
                )
            )
    return notes


def finish(lm, image, *, strategy, tol, prior, settings, solve=None, walk=None,
           walk_images=None, diagnostics=None) -> Reconstruction:  # fmt: skip
    """The :class:`Reconstruction` of ``image``, built once: its certificate, notes and
    timings; warns (:class:`ConvergenceWarning`) where an image did not converge.

    ``walk``: the layer-wise result the images come from, for ``walk_images`` (default:
    all); the joint ``solve``'s notes are those of the other images.
    """
    t0 = time.perf_counter()
    status = solve.status if solve is not None else None
    converged = None if status is None else [s == "converged" for s in status]
    cert = certify(lm, image, tol=tol, converged=converged,
                   notes=None if solve is None else solve.notes, prior=prior)  # fmt: skip
    seconds = dict(certificate=time.perf_counter() - t0)
    note = injectivity(lm, prior=prior)[1] if solve is None else solve.note
    images = range(len(cert)) if walk_images is None else walk_images
    notes = walk_notes(walk, cert.residual, tol, images) if walk is not None else []
    if solve is not None:
        seconds["solve"] = solve.seconds
        joint_images = [i for i in range(len(cert)) if walk is None or i not in images]
        notes += solve_notes(solve, cert.residual, tol, prior, images=joint_images)
    rec = Reconstruction(
        image=image, features=lm.feats, strategy=strategy, tol=tol, certificate=cert,
        layers=walk.layers if walk is not None else (),
        history=tuple(solve.history) if solve is not None else (),
        start=solve.start if solve is not None else None, status=tuple(status or ()),
        notes=tuple(notes), note=note, settings=settings, diagnostics=diagnostics or {},
        seconds=seconds,
    )  # fmt: skip
    bad = [row.residual for row in cert if not row.converged]
    if bad and prior is None:
        warnings.warn(
            f"the reconstruction did not reach the relative feature residual {tol:.0e} for "
            f"{len(bad)} of {len(cert)} images (worst residual reached {max(bad):.3e}); "
            "see rec.notes and rec.certificate",
            ConvergenceWarning, stacklevel=3,
        )  # fmt: skip
    return rec

"""The window of a Gauss-Newton step: the step taken only where the residual is.

Late in a joint solve the residual is local. On VGG-16 ``features.8`` at 224 px, 99% of
its energy lies in a quarter of the feature map from step 14 of 39 on, and in 1/32 of it
from step 20 (2-core Xeon, 2026-12-06): the hidden activation patterns are right almost
everywhere, and the remaining steps are spent on one patch. A step there restricted to
the inputs ``U`` that feed the patch is a block-coordinate Gauss-Newton step of the same
problem, and since the network is local (convolutions, pooling, elementwise ops) it can
be computed on a crop of the image:

* the box of the compared place whose rows and whose columns each hold :data:`SHARE` of
  the residual energy (the box itself at least ``2 SHARE - 1``), per image;
* ``U``: the inputs within ``radius + stride`` of the box (every input that feeds it);
* the rows: every feature that ``U`` feeds (within ``radius`` of ``U``);
* the crop: ``U`` widened by twice the radius, so that those rows see no crop edge (the
  crop's own zero padding): they equal the full map's rows exactly, which is checked
  against the full residual before a window is used (else the solve goes on unwindowed).

The crop's map is a :class:`~invert.reconstruction.layer_map.LayerMap` of the cropped
features (max-pooling switches re-indexed); its products, masked to ``U`` and to the
rows and embedded in full-size zeros, are a :class:`Linearization` of the full map that
the solver takes unchanged. ``radius`` is measured, not derived: the support of the
gradient of one feature at a random input (every op on the path is then seen by
autograd, whatever it is). A window is cut only where it covers at most
:data:`MAX_AREA` of the image, and never for a map that is not local (a feature that
sees the whole image: a global pooling, a linear layer).
"""

from __future__ import annotations

import dataclasses

import torch

from .layer_map import LayerMap, Linearization

__all__ = ["MAX_AREA", "SHARE", "Windows"]

SHARE = 0.99  # of the residual energy a window's rows, and its columns, hold
MAX_AREA = 0.5  # the largest share of the image worth a crop


def _trim(marginal, share):
    """The smallest index range ``[a, b)`` that leaves at most ``(1 - share) / 2`` of the
    marginal's total on each side."""
    c = torch.cumsum(marginal, 0)
    total = float(c[-1])
    if total <= 0:
        return 0, 0
    tail = (1 - share) / 2 * total
    a = int((c <= tail).sum())
    b = int((c < total - tail).sum()) + 1
    return a, min(max(b, a + 1), marginal.numel())


class Windows:
    """Windowed linearizations of a :class:`LayerMap` (entered) and its float32 twin.

    :meth:`linearize` returns ``None`` where no window applies (the residual is spread,
    the map is not local, or the crop's rows disagree with the full map): the caller
    then linearizes the full map.
    """

    def __init__(self, lm: LayerMap, low: LayerMap):
        self.lm, self.low = lm, low
        self.reason: str | None = None  # why windows are off for this solve, if they are
        self._geometry = None
        self._crop = None  # (key, entered LayerMap) of the last window
        self.area = 1.0  # share of the image the last step's crop covered

    # --- where the map is local, and how far a feature sees ---------------------------------

    def _measure(self):
        lm, low = self.lm, self.low
        if not lm.graph.traced or len(lm.input_shape) != 3 or lm.target.dim() != 4:
            return "not a traced map of images to feature maps"
        _, height, width = lm.input_shape
        scales = []
        for shape in [s.out_shape for s in lm.feats.steps] + [tuple(lm.target.shape[1:])]:
            if len(shape) != 3:
                return "a place on the way is not a feature map"
            h, w = shape[1:]
            if not h or not w or height % h or width % w or height // h != width // w:
                return "a place on the way does not divide the image evenly"
            scales.append(height // h)
        stride = scales[-1]
        align = max([stride, *scales])
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand((1, *lm.input_shape), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            lin = low.linearize(x.to(low.device, low.dtype), low.all[:1])
            u = torch.zeros_like(lin.r)
            cy, cx = lin.r.shape[2] // 2, lin.r.shape[3] // 2
            u[0, :, cy, cx] = 1
            seen = lin.vjp(u)[0].abs().sum(0) > 0
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        if not len(rows):
            return "the gradient of a feature is zero at a random input"
        y0, x0 = cy * stride, cx * stride
        radius = max(y0 - int(rows.min()), int(rows.max()) - (y0 + stride - 1),
                     x0 - int(cols.min()), int(cols.max()) - (x0 + stride - 1), 0)  # fmt: skip
        if 6 * radius >= min(height, width):
            return f"a feature sees {2 * radius + stride} px of a {height} px image"
        return dict(stride=stride, align=align, radius=radius + stride)

    def _geometry_or_none(self):
        if self._geometry is None and self.reason is None:
            measured = self._measure()
            if isinstance(measured, str):
                self.reason = measured
            else:
                self._geometry = measured
        return self._geometry

    # --- the window of one step -------------------------------------------------------------

    def _crops(self, r):
        """Per image the crop's corner ``(y0, x0)`` in input px, and the common size."""
        g = self._geometry
        s, a, rad = g["stride"], g["align"], g["radius"]
        _, height, width = self.lm.input_shape
        energy = r.double().pow(2).sum(1)  # (N, h, w) at the compared place
        boxes = []
        for e in energy:
            r0, r1 = _trim(e.sum(1), SHARE)
            c0, c1 = _trim(e.sum(0), SHARE)
            grow = 3 * rad + s
            y0 = max(0, (r0 * s - grow) // a * a)
            y1 = min(height, -(-(r1 * s + grow) // a) * a)
            x0 = max(0, (c0 * s - grow) // a * a)
            x1 = min(width, -(-(c1 * s + grow) // a) * a)
            boxes.append((y0, y1, x0, x1))
        hc = max(b[1] - b[0] for b in boxes)
        wc = max(b[3] - b[2] for b in boxes)
        corners = [(min(b[0], height - hc), min(b[2], width - wc)) for b in boxes]
        return corners, hc, wc

    def _crop_features(self, idx, corners, hc, wc):
        feats = self.lm.feats
        _, height, _ = self.lm.input_shape
        act = feats.activation[idx.cpu()]
        sf = height // act.shape[2]
        act = torch.stack([a[:, y // sf : (y + hc) // sf, x // sf : (x + wc) // sf]
                           for a, (y, x) in zip(act, corners)])  # fmt: skip
        steps = {s.name: s for s in feats.steps}
        switches = {}
        for name, sw in feats.switches.items():
            _, hi, wi = steps[name].in_shape
            s_in, s_out = height // hi, height // sw.shape[2]
            parts = []
            for k, (y, x) in zip(idx.cpu().tolist(), corners):
                part = sw[k, :, y // s_out : (y + hc) // s_out, x // s_out : (x + wc) // s_out]
                row, col = part // wi - y // s_in, part % wi - x // s_in
                if bool((row < 0).any() or (row >= hc // s_in).any() or (col < 0).any()
                        or (col >= wc // s_in).any()):  # fmt: skip
                    return None
                parts.append(row * (wc // s_in) + col)
            switches[name] = torch.stack(parts)
        return dataclasses.replace(feats, activation=act, switches=switches,
                                   input_shape=(self.lm.input_shape[0], hc, wc))  # fmt: skip

    def _map(self, idx, corners, hc, wc):
        """The crop's map, kept while the window does not move (windows repeat)."""
        key = (tuple(idx.tolist()), tuple(corners), hc, wc)
        if self._crop is None or self._crop[0] != key:
            self.close()
            feats = self._crop_features(idx, corners, hc, wc)
            if feats is None:
                return None
            crop = LayerMap(self.lm.source, feats, pooling=self.lm.pooling, dtype=self.low.dtype,
                            device=self.lm.device)  # fmt: skip
            self._crop = (key, crop.__enter__())
        return self._crop[1]

    def _masks(self, corners, hc, wc, dtype, device):
        """The rows the crop computes exactly ``(N, 1, hf, wf)`` and the free inputs
        ``(N, 1, hc, wc)``: bands along the crop edges that are not the image's."""
        g = self._geometry
        s, rad = g["stride"], g["radius"]
        _, height, width = self.lm.input_shape
        band_rows, band_free = -(-rad // s), 2 * rad + s
        rows = torch.ones(len(corners), 1, hc // s, wc // s, dtype=dtype, device=device)
        free = torch.ones(len(corners), 1, hc, wc, dtype=dtype, device=device)
        for i, (y, x) in enumerate(corners):
            for mask, band in ((rows, band_rows), (free, band_free)):
                if y > 0:
                    mask[i, :, :band] = 0
                if y + hc < height:
                    mask[i, :, mask.shape[2] - band :] = 0
                if x > 0:
                    mask[i, :, :, :band] = 0
                if x + wc < width:
                    mask[i, :, :, mask.shape[3] - band :] = 0
        return rows, free

    def linearize(self, x: torch.Tensor, idx: torch.Tensor, r: torch.Tensor):
        """The step's :class:`Linearization` on a window, in the twin's dtype, with the full
        residual ``r`` of the images ``idx`` at ``x``; ``None`` where no window applies."""
        self.area = 1.0
        if self._geometry_or_none() is None:
            return None
        corners, hc, wc = self._crops(r)
        _, height, width = self.lm.input_shape
        if hc * wc > MAX_AREA * height * width:
            return None
        low = self.low.dtype
        s = self._geometry["stride"]
        every = slice(None)  # per image, where its crop lies in the input and in the features
        pixels = [(i, every, slice(y, y + hc), slice(x0, x0 + wc))
                  for i, (y, x0) in enumerate(corners)]  # fmt: skip
        rows_at = [(i, every, slice(y // s, (y + hc) // s), slice(x0 // s, (x0 + wc) // s))
                   for i, (y, x0) in enumerate(corners)]  # fmt: skip
        xc = torch.stack([x[at] for at in pixels])
        try:  # a model may fix its sizes in forward (a reshape to 56 x 56): no crop then
            crop = self._map(idx, corners, hc, wc)
            lin = crop.linearize(xc.to(low), crop.all) if crop is not None else None
        except (RuntimeError, ValueError, IndexError) as error:
            self._geometry, self.reason = None, f"the model does not run on a crop ({error})"
            return None
        if lin is None:
            self._geometry, self.reason = None, "pooling switches do not fall inside the window"
            return None
        rows, free = self._masks(corners, hc, wc, low, x.device)
        r = r.to(low)
        rc = torch.stack([r[at] for at in rows_at])
        # the crop's rows must be the full map's: else its geometry is wrong for this map
        miss = torch.linalg.vector_norm(((lin.r - rc) * rows).flatten(1), dim=1)
        miss = miss / self.lm.scale[idx].to(low)
        if bool((miss > 100 * torch.finfo(low).eps).any()):
            self._geometry = None
            self.reason = f"the window's rows differ from the full map's by {float(miss.max()):.1e}"
            return None
        self.area = hc * wc / (height * width)

        def jvp(v):
            jc = lin.jvp(torch.stack([v[at] for at in pixels]) * free) * rows
            out = torch.zeros_like(r)
            for k, at in enumerate(rows_at):
                out[at] = jc[k]
            return out

        def vjp(u):
            gc = lin.vjp(torch.stack([u[at] for at in rows_at]) * rows) * free
            out = torch.zeros(x.shape, dtype=gc.dtype, device=gc.device)
            for k, at in enumerate(pixels):
                out[at] = gc[k]
            return (out,)

        return Linearization(r, jvp, vjp)

    def close(self) -> None:
        """Leave the crop's map (a new window, or the solve's end)."""
        if self._crop is not None:
            self._crop[1].__exit__(None, None, None)
            self._crop = None

"""The certificate's eigenvalue method: Lanczos (what ``method="auto"`` picks beyond the
Lanczos budget of 500 unknowns) beside the dense ``J^T J`` (the reference), same point,
same process. ConvPool-CNN-C CReLU at width 0.1, conv1, one 3 x 32 x 32 image (3072
unknowns), float64.

Usage::

    python bench/certificate.py
"""

import time

import torch

from invert.nn.zoo import create_model
from invert.reconstruction import features
from invert.reconstruction.certificate import jacobian_bounds
from invert.reconstruction.layer_map import LayerMap

torch.manual_seed(0)
net = create_model("convpool_c_crelu", width=0.1).double().eval()
x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
f = features(net, x, layer="conv1")
with LayerMap(net, f, device="cpu") as lm:
    for method in ("auto", "dense", "auto", "dense"):
        t = time.perf_counter()
        b = jacobian_bounds(lm, x, method=method)
        s = time.perf_counter() - t
        print(method, b.method[0], f"A={b.A[0]:.10f} B={b.B[0]:.10f}", f"{s:.2f} s")

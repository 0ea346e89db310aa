"""Joint inversion on real networks (issue 18): ours beside gradient inversion, same time.

Cases (issue 18's table, plus 224 px): VGG-16 ``features.3``/``.8``/``.15`` at 64 px and
``features.3``/``.8`` at 224; AlexNet ``features.1``/``.4``/``.7`` at 64; ResNet-18
``relu``, ``layer1.0.relu``, ``layer1``, ``layer2`` at 64 and ``layer2`` at 224; a net with
``F.relu(torch.cat([x, -x], 1))`` in its ``forward``. Models from ``create_model`` in
torchvision's layout (inplace ReLUs, seeded random weights, eval mode, float64), image:
scikit-image's astronaut resized to the size, in [0, 1].

Per case, in one process:

1. **Ours**: ``invert.reconstruct(model, features(model, x, layer=...))`` (strategy
   ``auto``: layer-wise, then the joint Gauss-Newton solve, then the certificate), its wall
   time, PSNR and SSIM (``skimage.metrics``, data range 1) against the image, Gauss-Newton
   steps, CG iterations, whether the certificate says unique, and the note where counting
   shows the layer is not injective. There (no unique answer exists) also ours with
   ``prior="tv", bounds=(0, 1)``: the image the prior picks.
2. **Gradient inversion** (the reference): Adam on the input
   (``bench/reconstruct.py``'s ``gradient_inversion``: relative feature misfit +
   squared-gradient TV, float32, the model's own max-pooling, best iterate), started from
   grey and stopped when it has used the wall time of ours (of the TV run where there is
   one); best of ``--lrs``.

Ratios: PSNR and SSIM differences ours - reference. A case whose model or layer does not
exist yet is skipped with the reason printed; any other error is printed in its row.

Goals (2 CPU cores, float64): VGG-16 ``features.3`` and ``.8`` at 64 px >= 100 dB,
unique, <= 10 s each; at 224 px ``features.3`` >= 100 dB in <= 20 s, ``features.8`` in
<= 60 s; where not injective the note at once (<= 5 s) and with the TV prior PSNR and
SSIM >= the reference.

Usage::

    python bench/real_networks.py [--quick] [--case vgg16:features.8:64 ...] [--threads 2]
                                  [--device cpu] [--record]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ helpers

CASES = [  # model, layer, size, in --quick
    ("vgg16", "features.3", 64, True),
    ("vgg16", "features.8", 64, True),
    ("vgg16", "features.15", 64, False),
    ("vgg16", "features.3", 224, False),
    ("vgg16", "features.8", 224, False),
    ("alexnet", "features.1", 64, False),
    ("alexnet", "features.4", 64, True),
    ("alexnet", "features.7", 64, False),
    ("resnet18", "relu", 64, True),
    ("resnet18", "layer1.0.relu", 64, False),
    ("resnet18", "layer1", 64, False),
    ("resnet18", "layer2", 64, True),
    ("resnet18", "layer2", 224, False),
    ("catcrelu", "relu_1", 64, True),
]


def _cat_crelu():
    """Two convs, each followed by ``F.relu(torch.cat([z, -z], 1))`` written in forward."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class CatCReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 24, 3, padding=1)

        def forward(self, x):
            z = self.conv1(x)
            z = self.conv2(F.relu(torch.cat([z, -z], 1)))
            return F.relu(torch.cat([z, -z], 1))

    return CatCReLU()


def make_model(name):
    """The seeded model in float64 eval mode, or (None, reason)."""
    import torch

    from invert.nn.zoo import create_model

    torch.manual_seed(0)
    try:
        model = _cat_crelu() if name == "catcrelu" else create_model(name)
    except (KeyError, ValueError) as error:
        return None, f"no model {name!r} yet ({error})"
    return model.double().eval(), None


def image(size):
    import numpy as np
    import skimage.data
    import torch
    from skimage.transform import resize

    arr = resize(skimage.data.astronaut() / 255.0, (size, size), anti_aliasing=True)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].double()


def quality(x, image_) -> tuple[float, float]:
    """PSNR (dB, data range 1; inf when bit-exact) and SSIM against the image."""
    from skimage.metrics import structural_similarity

    a = x[0].detach().cpu().double().numpy()
    b = image_[0].detach().cpu().double().numpy()
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else -10 * math.log10(mse)
    return psnr, float(structural_similarity(a, b, channel_axis=0, data_range=1.0))


def ours(model, feats, x, device, **options) -> dict:
    import invert.reconstruction.strategies as strategies
    from invert.reconstruction import reconstruct

    said, say = [], strategies.say  # when the counting note is said, before any solve
    strategies.say = lambda progress, text: said.append(time.perf_counter() - start)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = reconstruct(model, feats, device=device, **options)
    finally:
        strategies.say = say
    seconds = time.perf_counter() - start
    psnr, ssim = quality(x, rec.image)
    floats = [h for h in rec.history if h.get("inner") == "float32"]
    return dict(seconds=seconds, psnr=psnr, ssim=ssim, steps=len(rec.history),
                cg=sum(h["cg_iterations"] for h in rec.history), cg32=len(floats),
                unique=bool(rec.certificate[0].unique), note=rec.note,
                residual=rec.certificate[0].residual, strategy=rec.strategy,
                cert=rec.seconds.get("certificate", 0.0), note_s=said[0] if said else None,
                status=list(rec.status))  # fmt: skip


def reference(model, layer, x, seconds, lrs, tv, device) -> dict:
    from reconstruct import gradient_inversion

    best = None
    for lr in lrs:
        img, steps, used = gradient_inversion(model, layer, x.to(device), seconds, lr, tv)
        psnr, ssim = quality(x, img)
        if best is None or psnr > best["psnr"]:
            best = dict(psnr=psnr, ssim=ssim, steps=steps, seconds=used, lr=lr)
    return best


def run_case(name, layer, size, args, say) -> dict:
    import torch

    from invert.reconstruction import features

    row = dict(case=f"{name} {layer} {size}px")
    model, why = make_model(name)
    if model is None:
        row["skip"] = why
        say(f"- {row['case']}: skipped: {why}")
        return row
    device = args.device
    model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = image(size)
    try:
        t0 = time.perf_counter()
        feats = features(model, x.to(next(model.parameters()).device), layer=layer)
        row["features_s"] = time.perf_counter() - t0
        row["ours"] = ours(model, feats, x, device)
        if row["ours"]["note"]:  # not injective: the image the prior picks, too
            row["tv"] = ours(model, feats, x, device, prior="tv", bounds=(0, 1))
    except Exception as error:  # noqa: BLE001 - a row of the table, not a crash
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        say(f"- {row['case']}: ERROR {row['error']}")
        return row
    mine = row.get("tv", row["ours"])
    row["adam"] = reference(model, layer, x, mine["seconds"], args.lrs, args.tv, device)
    o, a = row["ours"], row["adam"]
    say(f"- {row['case']}: ours {o['seconds']:.1f} s ({o['strategy']}, {o['steps']} GN steps "
        f"({o['cg32']} with float32 products), {o['cg']} CG iterations, certificate "
        f"{o['cert']:.1f} s), PSNR {o['psnr']:.1f} dB, SSIM {o['ssim']:.3f}, unique "
        f"{o['unique']}, residual {o['residual']:.1e}, status {o['status']}")  # fmt: skip
    if o["note"]:
        say(f"  - note (said {o['note_s']:.2f} s into the call): {o['note']}")
    if "tv" in row:
        t = row["tv"]
        say(f"  - ours + TV prior, box [0, 1]: {t['seconds']:.1f} s, {t['steps']} GN steps, "
            f"PSNR {t['psnr']:.1f} dB, SSIM {t['ssim']:.3f}")  # fmt: skip
    say(f"  - Adam reference (lr {a['lr']}): {a['steps']} steps in {a['seconds']:.1f} s, PSNR "
        f"{a['psnr']:.1f} dB, SSIM {a['ssim']:.3f}")  # fmt: skip
    return row


def _injective(o) -> str:
    if not o["note"]:
        return "by counting ok"
    return f"no (note at {o['note_s']:.2f} s)" if o["note_s"] is not None else "no (note)"


def table(rows) -> list[str]:
    out = ["| case | ours s | GN steps | CG it. | PSNR dB | SSIM | unique | injective? | "
           "ours+TV s / dB / SSIM | Adam dB / SSIM (same time) | dPSNR | dSSIM |",
           "|" + "---|" * 12]  # fmt: skip
    for r in rows:
        if "skip" in r or "error" in r:
            out.append(f"| {r['case']} | " + r.get("skip", r.get("error", "")).replace("|", "/")
                       + " |" + " |" * 11)  # fmt: skip
            continue
        o, a, t = r["ours"], r["adam"], r.get("tv")
        mine = t or o
        tv = f"{t['seconds']:.1f} / {t['psnr']:.1f} / {t['ssim']:.3f}" if t else "-"
        out.append(
            f"| {r['case']} | {o['seconds']:.1f} | {o['steps']} | {o['cg']} | {o['psnr']:.1f} | "
            f"{o['ssim']:.3f} | {o['unique']} | {_injective(o)} "
            f"| {tv} | {a['psnr']:.1f} / {a['ssim']:.3f} | {mine['psnr'] - a['psnr']:+.1f} | "
            f"{mine['ssim'] - a['ssim']:+.3f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the cases marked quick only")
    parser.add_argument("--case", nargs="+", help="MODEL:LAYER:SIZE, e.g. vgg16:features.8:64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.05])
    parser.add_argument("--tv", type=float, default=1e-6, help="TV weight of the reference")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    cases = [c for c in CASES if c[3] or not args.quick]
    if args.case:
        wanted = [tuple(c.split(":")) for c in args.case]
        cases = [(m, layer, int(s), True) for m, layer, s in wanted]
    lines = []

    def say(text):
        lines.append(text)
        print(text, flush=True)

    _warm_up(args.device)
    rows = [run_case(m, layer, size, args, say) for m, layer, size, _ in cases]
    body = "\n".join(lines + [""] + table(rows))
    print("\n" + "\n".join(table(rows)))
    if args.record:
        from record import append_results

        from figures.common import machine_line

        path = append_results(
            "Real networks: joint inversion beside gradient inversion (issue 18)", body,
            command="`python bench/real_networks.py " + " ".join(sys.argv[1:]) + "`",
            machine=f"{machine_line()}, {args.threads} thread(s)",
        )  # fmt: skip
        print(f"recorded in {path}")


def _warm_up(device) -> None:
    """One tiny solve first: torch.func's one-time set-up is not any case's time."""
    import torch
    from torch import nn

    from invert.nn.activations import CReLU
    from invert.reconstruction import JointSettings, features, reconstruct

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 4, 3, padding=1), CReLU()).double()  # fmt: skip
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reconstruct(net, features(net, x, layer="4"), strategy="joint", device=device,
                    joint=JointSettings(max_steps=2))  # fmt: skip


if __name__ == "__main__":
    main()

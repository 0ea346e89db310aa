"""How far the AlexNet-layout conv1 learns under the unit-wise clip (issue 16, F1).

Trains ``alexnet64`` and ``alexnet64_crelu`` as ``crelu figures`` does (``fast`` recipe,
textures at 64 px, one seed) with a given clip setting, and prints per model the test
accuracy, the mean cosine between conv1's initial and final filters, and the pairing gap
``g = (mean mu_r - mean mu_w) / std mu_r`` of F1 (``theory.layer_pairing``). Recorded in
``docs/training/first-layer-clip.md``.

Usage::

    python bench/first_layer_clip.py [--clip 0.05] [--clip-first-conv | --no-clip-first-conv]
                                     [--conv1-std STD] [--seed 0]
"""

from __future__ import annotations

import argparse
import time


def run(name: str, args) -> str:
    import torch

    from invert.train.recipe import get_recipe
    from invert.train.spec import INIT, build_model, derived_seed, recipe_datasets
    from invert.train.trainer import train
    from theory.filter_pairing import layer_pairing

    recipe = get_recipe("fast", arch=name).replace(unit_clip=args.clip)
    if args.clip_first_conv is not None:
        recipe = recipe.replace(clip_first_conv=args.clip_first_conv)
    train_set, test_set = recipe_datasets(name, "textures", recipe, seed=args.seed)
    torch.manual_seed(derived_seed(args.seed, 0, INIT))
    model = build_model(name, train_set, recipe, seed=args.seed)
    conv1 = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    if args.conv1_std:
        torch.nn.init.normal_(conv1.weight, 0, args.conv1_std)
    initial = conv1.weight.detach().clone()
    start = time.perf_counter()
    history = train(model, train_set, test_set=test_set, recipe=recipe, seed=args.seed,
                    progress=False, device="cpu")  # fmt: skip
    cos = torch.nn.functional.cosine_similarity(initial.flatten(1), conv1.weight.flatten(1))
    pairs = layer_pairing(model, layers="conv1")["conv1"]
    gap = (pairs.mean_r - pairs.mean_w) / pairs.std_r
    return (f"{name}: clip {recipe.unit_clip}, conv1 clipped {recipe.clip_first_conv}, "
            f"test accuracy {history[-1]['test_accuracy']:.3f}, cos(conv1 initial, final) "
            f"{float(cos.mean()):.3f}, mu_w {pairs.mean_w:.4f}, mu_r {pairs.mean_r:.4f}, "
            f"g {gap:.2f} ({time.perf_counter() - start:.0f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=float, default=0.05, help="the recipe's unit_clip")
    parser.add_argument("--clip-first-conv", action=argparse.BooleanOptionalAction,
                        default=None, help="default: the recipe's")  # fmt: skip
    parser.add_argument("--conv1-std", type=float, default=0.0,
                        help="redraw conv1 from N(0, STD^2) (0: keep He)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("alexnet64", "alexnet64_crelu"):
        print(run(name, args), flush=True)


if __name__ == "__main__":
    main()

"""``crelu invariance``: invariance scores of the layers (Goodfellow et al. 2009, Fig. 4)."""

from __future__ import annotations

import math
from functools import partial

from .common import (
    Command,
    Run,
    UserError,
    add_image_size_argument,
    add_layers_argument,
    add_random_seed_argument,
)

__all__ = ["COMMANDS"]


def _data_options(p) -> None:
    p.add_argument(
        "--data",
        help="textures, cifar10:PATH, cifar100:PATH or folder:PATH (default: crops of the "
        "embedded natural photographs, with room for the transformations)",
    )
    p.add_argument("--split", default="test", help="data set split (default: test)")


def _score_options(p) -> None:
    p.add_argument("--n-images", type=int, default=1000, help="images used (default: 1000)")
    add_image_size_argument(p, "side of the model input (default: the model's own input size)")
    p.add_argument(
        "--firing-rate",
        type=float,
        default=0.01,
        help="global firing rate G the unit thresholds are set for (default: 0.01)",
    )
    p.add_argument(
        "--top-fraction", type=float, default=0.2,
        help="share of a layer's units, by score, whose mean is the layer score (default: 0.2)",
    )  # fmt: skip
    p.add_argument(
        "--translations",
        help="pixel shifts, each applied +/- horizontally and vertically, e.g. 1,2,3,4 "
        "(default: 1-4 px for 32 px inputs, scaled with the input size); 'none' for none",
    )
    p.add_argument(
        "--rotations",
        help="angles in degrees, each applied +/-, e.g. 10,20,30 "
        "(default: 5,10,...,30); 'none' for none",
    )
    p.add_argument(
        "--boundary",
        default="reflect",
        choices=("reflect", "circular", "replicate", "zeros", "error"),
        help="fills pixels a transformation needs beyond the image (default: reflect)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="model inputs per forward pass")
    add_random_seed_argument(p, "seed of the image sample (default 0)")


def _magnitudes(text: str | None, option: str, cast):
    """'1,2' -> [-1, 1, -2, 2]; 'none' -> []; None -> None (the library default)."""
    if text is None:
        return None
    if text.strip().lower() in ("none", ""):
        return []
    values = []
    for item in text.split(","):
        try:
            value = cast(item.strip())
        except ValueError:
            raise UserError(
                f"{option} takes comma-separated {cast.__name__} values such as 1,2,3; got {text!r}"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{option} values must be positive (each is applied +/-); got {item}")
        values += [-value, value]
    return values


def _invariance(run: Run) -> int:
    from theory.invariance import InvarianceScore, Transformations, invariance_scores

    args = run.args
    if args.n_images < 1:
        raise UserError(f"--n-images must be positive; got {args.n_images}")
    translations = _magnitudes(args.translations, "--translations", int)
    rotations = _magnitudes(args.rotations, "--rotations", float)
    model, device = run.load_model()
    size = run.image_size(model)
    margin = Transformations.build(translations, rotations, (size, size)).margin((size, size))
    images = None
    if args.data is not None:
        from invert.data.natural_images import dataset_images

        images = dataset_images(args.data, args.n_images, split=args.split, size=size,
                                margin=margin, seed=args.random_seed)  # fmt: skip
    result = invariance_scores(
        model,
        images,
        score=InvarianceScore(
            translations=translations,
            rotations=rotations,
            boundary=args.boundary,
            firing_rate=args.firing_rate,
            top_fraction=args.top_fraction,
        ),
        layers=run.layers(),
        input_size=size,
        n_images=args.n_images,
        batch_size=args.batch_size,
        device=device,
        seed=args.random_seed,
        progress=not args.quiet,
    )
    run.emit(result.rows())
    return 0


COMMANDS = (
    Command(
        "invariance",
        run=_invariance,
        help="invariance scores of the layers (Goodfellow et al. 2009, Fig. 4)",
        description="Per layer: mean of the top 20% of unit scores S = L / G, with "
        "thresholds giving a 1% global firing rate G and L the firing rate over "
        "translated and rotated versions of the images on which a unit fires.",
        loads_model=True,
        arguments=(
            _data_options,
            partial(add_layers_argument, help="comma-separated layers (default: every conv layer)"),
            _score_options,
        ),
        table="a table",
    ),
)

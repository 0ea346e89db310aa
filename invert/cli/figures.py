"""The ``crelu figures`` subcommand: every figure and table of the paper, and a report.

    crelu figures [--out DIR] [--data textures|cifar10:PATH|...] [--recipe tiny|fast|paper]
                  [--cache-dir DIR] [--device cpu|cuda] [--jobs N] [--quiet]

Models come from the shared cache (trained on a miss, each once); the PNGs,
``report.md`` and ``report.json`` go to ``--out``. Bad input (an unknown or missing data
set, an unwritable output folder or cache) is reported in one line, exit status 2,
before anything is trained.
"""

from __future__ import annotations

import shlex
import sys

__all__ = ["register", "add_arguments", "run"]


def add_arguments(p) -> None:
    """The options of ``crelu figures`` (also used by ``python -m figures.run_all``)."""
    p.add_argument("--out", default="crelu-figures", help="output folder (default: crelu-figures)")
    p.add_argument(
        "--data",
        default="textures",
        help="textures (embedded natural-image crops, the default), cifar10:PATH, "
        "cifar100:PATH or folder:PATH (local files only)",
    )
    p.add_argument(
        "--recipe",
        default="fast",
        help="training recipe and analysis sizes: tiny (seconds, smoke test), fast (minutes "
        "on a laptop CPU, the default) or paper (the paper's schedule, for a GPU)",
    )
    p.add_argument("--cache-dir", help="model cache (default: $CRELU_CACHE or ~/.cache/crelu)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--jobs",
        type=int,
        help="training processes on a CPU (default: 2 when there are at least 2 cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "figures",
        help="regenerate every figure and table of the paper, with a findings report",
        description="Train (or load from the cache) the five ConvPool-CNN-C models, draw "
        "Figs. 1-5, compute Tables 1 and 6, the frame-bounds and pooling tables, and check "
        "the paper's findings F1-F5 with a verdict each, in report.md and report.json.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args, *, prog: str = "crelu figures") -> int:
    from figures.run_all import run_figures

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer; got {args.jobs}")
    options = ["--out", args.out, "--data", args.data, "--recipe", args.recipe]
    if args.cache_dir:
        options += ["--cache-dir", args.cache_dir]
    report = run_figures(
        args.out,
        data=args.data,
        recipe=args.recipe,
        cache_dir=args.cache_dir,
        device=args.device,
        jobs=args.jobs,
        progress=not args.quiet,
        command=" ".join([prog, *(shlex.quote(c) for c in options)]),
    )
    print(f"wrote {args.out}/report.md, report.json and "
          f"{sum(len(f['files']) for f in report['figures'])} figures "
          f"in {report['wall_time_s']:.0f} s")  # fmt: skip
    for finding in report["findings"]:
        print(f"  {finding['id']} {finding['verdict']:>13}: {finding['summary']}")
    sys.stdout.flush()
    return 0

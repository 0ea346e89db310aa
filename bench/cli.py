"""The command line's waits: ``crelu --help`` against ``import torch``, and
``crelu reconstruct --layers all`` with the default options (strategy ``auto``: the
layer-wise walk, then a joint solve where it falls short) against the same with two
threads, with ``--strategy layerwise`` alone, and with the projection diagnostic (the
defaults before issue 13).

Each command runs in a fresh process (as a user types it), alternating the variants;
the medians are printed with their ratios, and with ``--record`` appended to
``bench/RESULTS.md``. The reconstruction needs the cached ``MODEL@DATA`` (``--spec``);
it is trained on the first run if missing (not timed: run once before).

    python bench/cli.py --record                      # help, and reconstruct at 32 px
    python bench/cli.py --rounds 3 --projection       # also time --projection (slow)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from record import append_results  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def _median_of(variants: dict, rounds: int) -> dict:
    """Median seconds of each variant, run in alternation ``rounds`` times."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, argv in variants.items():
            times[name].append(_seconds(argv))
    return {name: statistics.median(values) for name, values in times.items()}


def _help(rounds: int) -> list[str]:
    crelu = [sys.executable, "-m", "invert"]
    t = _median_of({
        "crelu --help": [*crelu, "--help"],
        "crelu reconstruct --help": [*crelu, "reconstruct", "--help"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import invert.nn' (torch and the models)": [
            sys.executable, "-c", "import invert.nn"],
    }, rounds)  # fmt: skip
    torch = t["python -c 'import torch'"]
    return [f"{name}: {value:.2f} s ({value / torch:.2f}x of importing torch)"
            for name, value in t.items()]  # fmt: skip


def _reconstruct(spec: str, rounds: int, projection: bool) -> list[str]:
    base = [sys.executable, "-m", "invert", "reconstruct", spec, "--image", "skimage:astronaut",
            "--layers", "all", "--no-train", "--quiet", "--json"]  # fmt: skip
    variants = {
        "defaults (one thread at 32 px, strategy auto: joint where layer-wise falls short)": base,
        "--threads 2": [*base, "--threads", "2"],
        "--strategy layerwise (the paper's walk alone)": [*base, "--strategy", "layerwise"],
    }
    if projection:
        variants["--projection (the former default)"] = [*base, "--projection"]
    t = _median_of(variants, rounds)
    first = next(iter(t.values()))
    lines = [f"{name}: {value:.1f} s ({value / first:.2f}x of the defaults)"
             for name, value in t.items()]  # fmt: skip
    lines.append(f"goal <= 30 s with the defaults: {'met' if first <= 30 else 'NOT met'}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="convpool_c_crelu@textures")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--projection", action="store_true", help="also time --projection")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    from figures.common import machine_line

    _seconds(
        [
            sys.executable,
            "-m",
            "invert",
            "reconstruct",
            args.spec,
            "--image",
            "skimage:astronaut",
            "--layers",
            "conv1",
            "--quiet",
        ]
    )  # trains on a miss; not timed
    load = os.getloadavg()[0]
    lines = _help(args.rounds) + _reconstruct(args.spec, args.rounds, args.projection)
    lines.append(
        f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
        f"medians of {args.rounds} alternating rounds, each a fresh process"
    )
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print("\n".join(lines))
    if args.record:
        results = append_results(
            "Command line: help and `crelu reconstruct --layers all`",
            "\n".join(f"- {line}" for line in lines),
            command=f"`{command}` (model `{args.spec}`, recipe fast, "
            f"`CRELU_CACHE={os.environ.get('CRELU_CACHE', '~/.cache/crelu')}`)",
            machine=machine_line(),
        )
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

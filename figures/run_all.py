"""Every figure and table of the paper in one run, with a report of the findings.

:func:`run_figures` checks its inputs (data spec, output folder, model cache) before any
work, trains the models missing from the cache (in parallel processes on a multi-core
CPU), runs each script of this package on the shared models, and writes the PNGs plus
``report.md`` and ``report.json``: data, recipe, model sizes, machine, wall time, every
table, and the paper's findings F1-F6 checked against criteria fixed in
:mod:`figures.findings`, each with its numbers and a verdict.

    crelu figures --out DIR [--data textures] [--recipe fast] [--cache-dir DIR]
    python -m figures.run_all --out DIR ...
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

from figures import (
    fig1_filter_pairs,
    fig2_pairing_relu,
    fig3_pairing_crelu,
    fig4_invariance,
    fig5_reconstructions,
    table1_errors,
    table6_correlations,
    table_frame_bounds,
    table_pooling,
)
from invert.errors import UserError
from invert.progress import progress_bar, say

from .common import (
    FIRST_SEED_ONLY,
    FORMATS,
    MODELS,
    SEED,
    Session,
    check_output_dir,
    json_ready,
    machine_info,
    markdown_table,
    write_json,
)
from .findings import evaluate_findings

__all__ = ["SCRIPTS", "run_figures", "train_models"]

#: The scripts in the order they run (and appear in the report).
SCRIPTS = (
    fig1_filter_pairs,
    fig2_pairing_relu,
    fig3_pairing_crelu,
    fig4_invariance,
    fig5_reconstructions,
    table1_errors,
    table6_correlations,
    table_frame_bounds,
    table_pooling,
)

#: Matched training runs per compared variant by default (double and AVR: one), chosen
#: for the 15-minute cold budget of the ``fast`` recipe on two CPU cores (measured: see
#: bench/RESULTS.md); the report states what more seeds each undecided finding needs.
DEFAULT_SEEDS = 3

# relative training cost on a CPU (measured seconds per epoch): the longest start first
_COST = {"double": 4.0, "crelu": 2.0, "relu": 1.0, "avr": 1.0, "crelu_half": 1.0,
         "alex_crelu": 0.5, "alex_relu": 0.45}  # fmt: skip


def _train_worker(spec: str, recipe, cache_dir, threads: int, seed: int) -> float:
    """Train (or find) one MODEL@DATA in the cache, in a worker process; the seconds."""
    import warnings

    import torch

    from invert.train.loader import load_model

    torch.set_num_threads(threads)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        load_model(
            spec, recipe=recipe, device="cpu", cache_dir=cache_dir, progress=False, seed=seed
        )
    return time.perf_counter() - started


def train_models(session: Session, *, jobs: int | None = None, progress: bool = True) -> dict:
    """Train every run (model of :data:`~figures.common.MODELS`, seed) missing from the cache.

    It first says which models it trains. On a CPU with ``jobs > 1`` the models train in
    ``jobs`` worker processes of ``cpus // jobs`` threads each, longest first (small
    convolutions use two threads poorly, so two single-threaded trainings finish sooner
    than two in a row); the progress bar counts the epochs of all of them (read from the
    checkpoint each run rewrites after every epoch) and names the ones running. It shows
    an ETA (:func:`training_eta`) only once every model still to train has a measured
    epoch; until then each running model shows its own time left, from its own epochs. On
    a GPU, or with ``jobs=1``, they train one after the other in this process, with the
    trainer's own per-epoch progress. Each lands in the shared cache
    (:func:`invert.train.loader.load_model`), from where the scripts load it.

    Returns
    -------
    dict
        ``(role, seed)`` -> seconds spent training it (cached runs are absent).
    """
    missing = [run for run in session.runs() if not session.is_cached(*run)]
    missing.sort(key=lambda run: (-_COST[run[0]], run[1]))
    if not missing:
        return {}
    if not session.train_if_missing:
        names = ", ".join(f"{session.spec(r)} (seed {s})" for r, s in missing)
        raise FileNotFoundError(f"not in the model cache: {names}; train them or allow training")
    cpus = os.cpu_count() or 1
    jobs = min(cpus, 2) if jobs is None else jobs
    jobs = max(1, min(jobs, len(missing)))
    parallel = jobs > 1 and session.device == "cpu"
    how = f"{jobs} at a time" if parallel else "one after the other"
    say(progress, f"training {len(missing)} models ({how}, recipe "
                  f"{session.recipe_for(missing[0][0]).name}, into {session.cache_dir}): "
                  + ", ".join(_run_name(run) for run in missing))  # fmt: skip
    if parallel:
        return _train_in_parallel(session, missing, jobs, max(1, cpus // jobs), progress)
    seconds = {}
    for index, (role, seed) in enumerate(missing):
        say(progress, f"training models: {session.spec(role)} seed {seed} "
                      f"({index + 1} of {len(missing)})")  # fmt: skip
        started = time.perf_counter()
        session.model(role, seed)
        seconds[role, seed] = time.perf_counter() - started
    return seconds


def _train_in_parallel(session: Session, missing: list, jobs: int, threads: int, progress):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    epochs = {run: session.recipe_for(run[0]).epochs for run in missing}
    seconds, context = {}, multiprocessing.get_context("spawn")
    bar = progress_bar(progress, total=sum(epochs.values()), desc="training models",
                       unit="epoch")  # fmt: skip
    # tqdm's own ETA would divide by a rate of mixed models: show ours, or none
    bar.bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"
    with bar, ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_train_worker, session.spec(role), session.recipe_for(role),
                        session.cache_dir, threads, seed): (role, seed)
            for role, seed in missing
        }  # fmt: skip
        pending = set(futures)
        bar.set_postfix_str(_training_status(missing, epochs, [(0, None, 0.0)] * len(missing),
                                              jobs))  # fmt: skip
        while pending:
            done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            for future in done:
                seconds[futures[future]] = future.result()
            states = [_epochs_done(session, run, epochs[run], run in seconds) for run in missing]
            bar.n = sum(state[0] for state in states)
            bar.set_postfix_str(_training_status(missing, epochs, states, jobs))
    return seconds


def _training_status(missing: list, epochs: dict, states: list, jobs: int) -> str:
    """The bar's postfix: the ETA once every unfinished model has a measured epoch (else
    none), then the running models, each with its epochs and its own time left.

    Examples
    --------
    >>> runs = [("crelu", 0), ("relu", 0), ("avr", 0)]
    >>> epochs = dict.fromkeys(runs, 10)
    >>> _training_status(runs, epochs, [(4, 2.0, 1.0), (0, None, 0.0), (0, None, 0.0)], 2)
    'ETA after the first epoch of each model, convpool_c_crelu 4/10 (00:11 left), convpool_c 0/10'
    >>> _training_status(runs, epochs, [(4, 2.0, 1.0), (10, 1.0, 0.0), (1, 1.0, 0.0)], 2)
    'ETA 00:11, convpool_c_crelu 4/10 (00:11 left), convpool_c_avr 1/10 (00:09 left)'
    """
    from tqdm.auto import tqdm

    unfinished = [(run, state) for run, state in zip(missing, states) if state[0] < epochs[run]]
    rows = [(d, epochs[r], s, _COST[r[0]], into) for r, (d, s, into) in zip(missing, states)]
    seconds = training_eta(rows, jobs) if all(state[1] for _, state in unfinished) else None
    eta = (
        tqdm.format_interval(seconds)
        if seconds is not None
        else "after the first epoch of each model"
    )
    running = []
    for run, (done, per_epoch, into) in unfinished[:jobs]:
        text = f"{_run_name(run)} {done}/{epochs[run]}"
        if per_epoch:
            left = max(0.0, (epochs[run] - done) * per_epoch - into)
            text += f" ({tqdm.format_interval(left)} left)"
        running.append(text)
    return ", ".join([f"ETA {eta}", *running])


def _run_name(run) -> str:
    role, seed = run
    return MODELS[role] + (f" seed {seed}" if seed != SEED else "")


def _epochs_done(session: Session, run: tuple, total: int, finished: bool):
    """``(epochs done, mean seconds per epoch or None, seconds since the last epoch
    ended)`` of a model being trained, from the checkpoint its run rewrites each epoch."""
    from invert.train.checkpoints import read_metadata
    from invert.train.loader import partial_path

    path = session.cache_file(*run) if finished else partial_path(session.cache_file(*run))
    try:
        history = read_metadata(path).get("history") or []
        since = max(0.0, time.time() - path.stat().st_mtime)
    except (OSError, ValueError):  # not written yet, or renamed into place just now
        return (total if finished else 0), None, 0.0
    times = [h["seconds"] for h in history if h.get("seconds")]
    return len(history), (sum(times) / len(times) if times else None), since


def training_eta(models: list[tuple], jobs: int) -> float | None:
    """Seconds until every model is trained, from measured epoch times.

    ``models`` holds ``(epochs done, epochs in all, seconds per epoch or None, cost,
    seconds into the current epoch)`` in the order the workers take them; a model
    without a measured epoch is estimated from those with one, scaled by the costs. The
    first unfinished ``jobs`` models are running; each later one starts on the first
    worker to free up. ``None`` until one epoch of some model has been measured.

    Examples
    --------
    Two workers: a model with 6 epochs of 2 s left, 1 s into the next one; one with 2 of
    1 s left; then a queued model half as costly as the first (10 epochs of 1 s):

    >>> training_eta([(4, 10, 2.0, 2.0, 1.0), (8, 10, 1.0, 1.0, 0.0), (0, 10, None, 1.0, 0.0)],
    ...              2)
    12.0
    """
    measured = [model[2] / model[3] for model in models if model[2]]
    if not measured:
        return None
    per_cost = sum(measured) / len(measured)
    remaining = [max(0.0, (total - done) * (s or per_cost * cost) - into)
                 for done, total, s, cost, into in models if done < total]  # fmt: skip
    workers = [0.0] * jobs
    for work in remaining:  # list scheduling, in queue order
        workers[workers.index(min(workers))] += work
    return max(workers) if remaining else 0.0


def _model_rows(session: Session, trained: dict) -> list[dict]:
    rows = []
    for role, seed in session.runs():
        model = session.model(role, seed)
        meta = getattr(model, "metadata", {}) or {}
        rows.append({
            "role": role,
            "model": MODELS[role],
            "seed": seed,
            "width": (meta.get("config") or {}).get("width"),
            "conv1_filters": model.conv1.conv.out_channels,
            "params": sum(p.numel() for p in model.parameters()),
            "epochs": len(meta.get("history") or []),
            "test_accuracy": meta.get("test_accuracy"),
            "source": (f"trained now ({trained[role, seed]:.0f} s)" if (role, seed) in trained
                       else "cache"),
        })  # fmt: skip
    return rows


def _data_summary(session: Session) -> dict:
    test = session.test_set()
    from invert.data import DataSpec

    recipe = session.recipe_for("relu")
    summary = {
        "spec": session.data,
        "classes": len(test.classes),
        "class_names": list(test.classes),
        "test_items": len(test),
        "image_shape": list(test[0][0].shape),
    }
    if DataSpec.parse(session.data).takes_options:
        summary["options"] = dict(recipe.data.options)
    return summary


#: The experimental design, in the report (issue 16).
DESIGN = (
    "matched runs: each of the {seeds} seeds trains every compared variant (ConvPool-CNN-C "
    "ReLU, CReLU, CReLU-half; AlexNet-layout ReLU, CReLU) on the same item order, flips "
    "and dropout draws, and with the same initial weights up to the first layer whose shape "
    "differs (conv1 of ReLU and CReLU); "
    "{once} train with seed {first} only (Table 1's context, compared by no finding). "
    "F1, F3 and F4 judge the per-seed differences by the paired rule of "
    "figures/findings.py (Student t, two-sided 0.05) and state the smallest difference the "
    "run could detect (power 0.8) and the seeds an undecided difference would need"
)


def _markdown(report: dict) -> str:
    lines = [
        "# CReLU paper figures: report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Data: `{report['data']['spec']}`: {report['data']['classes']} classes, "
        f"{report['data']['test_items']} test images of "
        f"{'x'.join(map(str, report['data']['image_shape']))}"
        + (f", options {report['data'].get('options')}" if report["data"].get("options") else ""),
        f"- Recipe: `{report['recipe']['name']}` ({report['recipe']['epochs']} epochs, batch "
        f"{report['recipe']['batch_size']}, lr {report['recipe']['lr']}, width "
        f"{report['recipe']['model']['width']}, {report['recipe']['schedule']} schedule)",
        f"- Analysis sizes: {report['analysis_sizes']}",
        f"- Machine: {report['machine']['cpus']} x {report['machine']['cpu']}, "
        f"torch {report['machine']['torch']}, device {report['device']}, GPU "
        f"{report['machine']['gpu'] or 'none'}; load average at start "
        f"{report['machine']['load_average']}, at end {report['load_average_end']}",
        f"- Wall time: {report['wall_time_s']:.1f} s (training {report['training_s']:.1f} s; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report["step_seconds"].items())
        + ")",
        f"- Toolkit {report['toolkit_version']}, seeds {report['seeds']} (figures show seed "
        f"{report['seed']}, Fig. 4 and the tables the mean over seeds)",
        f"- Design: {report['design']}",
        "",
        "## Models",
        "",
        markdown_table(report["models"]),
        "",
        "## Findings",
        "",
        "| finding | claim | numbers | verdict |",
        "|---|---|---|---|",
    ]
    for f in report["findings"]:
        summary = f["summary"].replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| {f['id']} | {f['claim']} | {summary} | **{f['verdict']}** |")
    lines += ["", "Criteria (fixed before the run, in `figures/findings.py`):", ""]
    for f in report["findings"]:
        lines.append(f"- **{f['id']}**: {f['criterion']}")
    lines += ["", "## Figures", ""]

    def command(item):
        if not item.get("command"):
            return []
        return [f"Reproduce this table alone: `{item['command']}`", ""]

    for item in report["figures"]:
        lines += [f"### {item['title']}", ""]
        lines += [f"![{item['id']}]({name})" for name in item["files"]]
        lines += ["", markdown_table(item["rows"], item.get("columns")), "", *command(item)]
        for title, table in (item.get("more_tables") or {}).items():
            lines += [f"{title}:", "", markdown_table(table["rows"], table.get("columns")), ""]
            lines += command(table) if table.get("command") else command(item)
    lines += ["## Tables", ""]
    for item in report["tables"]:
        lines += [f"### {item['title']}", "", markdown_table(item["rows"], item.get("columns")), ""]
        lines += command(item)
    return "\n".join(lines)


def run_figures(
    out="crelu-figures",
    *,
    data: str = "textures",
    recipe="fast",
    cache_dir=None,
    device: str | None = None,
    jobs: int | None = None,
    seeds: int = DEFAULT_SEEDS,
    format: str = "png",
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Regenerate every figure and table and write ``report.md`` / ``report.json``.

    Parameters
    ----------
    out : path
        Output folder (created; checked writable before any work).
    data : str
        ``textures`` (embedded), ``cifar10:PATH``, ``cifar100:PATH`` or ``folder:PATH``.
    recipe : {"tiny", "fast", "paper"} or Recipe
        Training recipe of the models; also sets the analysis sizes.
    cache_dir : path, optional
        Model cache (default: the loader's).
    device : str, optional
        ``None``: CUDA when available, else CPU.
    jobs : int, optional
        Training processes on a CPU (default: 2 when there are two cores or more).
    seeds : int
        Matched training runs per compared variant (double and AVR: one); F1, F3 and F4
        are judged on the per-seed differences (:mod:`figures.findings`).
    format : {"png", "svg", "pdf"}
        File format of the figures (PNGs at a slide's resolution).
    progress : bool
        Progress bars on stderr.
    command : str, optional
        The command line to record in the report.

    Returns
    -------
    dict
        The report (as written to ``report.json``).

    Examples
    --------
    >>> report = run_figures("figs", recipe="tiny")  # doctest: +SKIP
    >>> [f["verdict"] for f in report["findings"]]  # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm

    from invert.version import __version__

    started = time.perf_counter()
    machine = machine_info()
    out = check_output_dir(out)
    session = Session(data=data, recipe=recipe, cache_dir=cache_dir, device=device,
                      progress=progress, seeds=seeds, format=format)  # fmt: skip
    session.test_set()  # an unknown or missing data set fails here, before any training
    session.check_cache_writable()
    trained = train_models(session, jobs=jobs, progress=progress)
    training_s = time.perf_counter() - started
    results, step_seconds = {}, {}
    # no ETA: the steps differ too much in cost for a rate to predict the rest
    bar = tqdm(SCRIPTS, desc="figures", unit="step", disable=not progress, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")  # fmt: skip
    for script in bar:
        bar.set_postfix_str(script.STEM)
        torch.manual_seed(SEED)
        t0 = time.perf_counter()
        result = script.main(out, session=session)
        step_seconds[result.id] = time.perf_counter() - t0
        results[result.id] = result
    bar.close()
    recipe_obj = session.recipe_for("relu")
    report = {
        "command": command or f"run_figures({str(out)!r}, data={data!r}, recipe={recipe!r})",
        "toolkit_version": __version__,
        "seed": SEED,
        "seeds": session.seed_list(),
        "design": DESIGN.format(
            seeds=len(session.seed_list()),
            first=SEED,
            once=" and ".join(MODELS[r] for r in FIRST_SEED_ONLY),
        ),
        "data": _data_summary(session),
        "recipe": recipe_obj.to_dict(),
        "analysis_sizes": dataclasses.asdict(session.sizes),
        "device": session.device,
        "machine": machine,
        "models": _model_rows(session, trained),
        "figures": [r.to_dict() for r in results.values() if r.files],
        "tables": [r.to_dict() for r in results.values() if not r.files],
        "findings": evaluate_findings(results),
        "training_s": training_s,
        "step_seconds": step_seconds,
    }
    try:
        report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        report["load_average_end"] = None
    report["wall_time_s"] = time.perf_counter() - started
    report = json_ready(report)
    write_json(out / "report.json", report)
    from invert.files import atomic_write_bytes

    atomic_write_bytes(out / "report.md", (_markdown(report) + "\n").encode())
    return report


def add_arguments(p) -> None:
    """The options of ``crelu figures`` (also used by ``python -m figures.run_all``)."""
    p.add_argument(
        "--out", default="crelu-figures", metavar="DIR",
        help="folder for the PNGs of Figs. 1-5, report.md and report.json (created; default: "
        "crelu-figures)",
    )  # fmt: skip
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
        "--seeds", type=int, default=DEFAULT_SEEDS,
        help=f"matched training runs per compared variant, seeds 0..N-1 (default: "
        f"{DEFAULT_SEEDS}); the findings that compare trained models judge the per-seed "
        "differences",
    )  # fmt: skip
    p.add_argument(
        "--format", default="png", choices=FORMATS,
        help="file format of the figures: png (at a slide's resolution, the default), svg or pdf",
    )  # fmt: skip
    p.add_argument(
        "--jobs",
        type=int,
        help="training processes on a CPU (default: 2 when there are at least 2 cores)",
    )
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars on stderr (shown by default)")  # fmt: skip


def run_from_args(args, *, prog: str = "crelu figures") -> int:
    """Run :func:`run_figures` with parsed :func:`add_arguments` options; print a summary."""
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be a positive integer; got {args.jobs}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be a positive integer; got {args.seeds}")
    options = ["--out", args.out, "--data", args.data, "--recipe", args.recipe]
    options += ["--seeds", str(args.seeds)]
    if args.format != "png":
        options += ["--format", args.format]
    if args.cache_dir:
        options += ["--cache-dir", args.cache_dir]
    report = run_figures(
        args.out,
        data=args.data,
        recipe=args.recipe,
        cache_dir=args.cache_dir,
        device=args.device,
        jobs=args.jobs,
        seeds=args.seeds,
        format=args.format,
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


def main(argv=None) -> int:
    """``python -m figures.run_all``: the same options as ``crelu figures``."""
    import argparse

    from invert.errors import run_safely

    prog = "python -m figures.run_all"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_safely(prog, lambda: run_from_args(args, prog=prog))


if __name__ == "__main__":
    sys.exit(main())

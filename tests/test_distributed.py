"""Distributed training: N gloo processes on the CPU against one process, rank-0-only
writes, resume, augmentation shards, and one-line errors for bad launches.

The ranks are forked from this process (torch and the texture data are already loaded:
no second import) and run the real ``crelu train`` entry point with the environment
``torchrun`` would give them; a slow test runs ``python -m torch.distributed.run``
itself. Every rank records, with a Python audit hook, each write it makes under the
output folder, so "only rank 0 writes" is observed, not assumed.

Tolerance of the equality with one process (stated here, checked below): the runs
compute the same sums in different orders (a 32-item batch against two 16-item
halves whose gradients gloo adds and DistributedDataParallel halves), so each step
differs by float32 rounding, about 1e-7 relative. The kinks of ReLU and max-pooling
and the gradient-clipping threshold amplify such differences: perturbing the initial
weights of the one-process run by 1e-7 relative (one float32 ulp) moved its weights
after these 12 steps by 4e-5 to 3.3e-3 of the distance training moved them, over
five draws. We require ``||w_2 - w_1|| <= 2e-2 ||w_1 - w_0||`` (``w_0``: the initial
weights, ``w_1``: one process, ``w_2``: two ranks); measured: 1.8e-3, and 9.5e-5 since
the trainer draws the initial weights right after seeding. A rank training alone on its
16-item half-batches (twice the steps, the same initial weights and item order) gave
0.94 before that change and 0.022 after it: still outside the tolerance (the control
below), but by a margin of 1.1, not 47.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from invert.cli import main
from invert.data import augment
from invert.nn.zoo import create_model
from invert.train.batches import INIT, derived_seed
from invert.train.checkpoints import load_checkpoint, load_training_state, save_checkpoint
from invert.train.distributed import current_context, distributed, distributed_environment
from invert.train.trainer import (
    Recipe,
    RunSettings,
    Trainer,
    build_model,
    evaluate,
    get_recipe,
    recipe_datasets,
    train_from_spec,
    training_state_path,
)

SPEC = "convpool_c@textures"
TOLERANCE = 2e-2  # of the distance training moved the weights; see the module docstring


@pytest.fixture(autouse=True)
def _no_launcher_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- forked ranks -----------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.chmod", "os.truncate")


def _watch_writes(root: str, log) -> None:
    """Record every file this process creates, writes, renames or removes under ``root``."""
    root = os.path.abspath(root)

    def inside(path) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        full = os.path.abspath(os.fsdecode(path))
        return full == root or full.startswith(root + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else None
            if writing is None:
                writing = bool((flags or 0) & _WRITE_FLAGS)
            paths = [path] if writing else []
        elif event in _PATH_EVENTS:
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for path in paths:
            if inside(path):
                log.write(f"{event} {os.fsdecode(path)}\n")

    sys.addaudithook(hook)


def _rank_main(rank, world, port, argv, logdir, environment, crash_after, watch):
    """One forked rank: the environment torchrun would set, then ``crelu`` itself."""
    status = 99
    stdout = open(logdir / f"rank{rank}.stdout", "w", buffering=1)  # noqa: SIM115
    stderr = open(logdir / f"rank{rank}.stderr", "w", buffering=1)  # noqa: SIM115
    writes = open(logdir / f"rank{rank}.writes", "w", buffering=1)  # noqa: SIM115
    try:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        sys.stdout, sys.stderr = stdout, stderr
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            **environment,
        )
        torch.set_num_threads(1)
        if watch is not None:
            _watch_writes(str(watch), writes)
        if crash_after is not None:  # die like kill -9 right after that epoch's save
            original = Trainer._save

            def save_then_die(self, epoch):
                original(self, epoch)
                if epoch >= crash_after:
                    stdout.flush(), stderr.flush()
                    os._exit(17)

            Trainer._save = save_then_die
        status = main(list(argv))
    except BaseException:  # report anything to the parent through the log
        traceback.print_exc(file=stderr)
        status = 98
    finally:
        for file in (stdout, stderr, writes):
            file.flush()
        os._exit(status)


def _run_ranks(argv, logdir, *, world=2, port=None, ranks=None, environment=None,
               crash_after=None, watch=None, timeout=240):  # fmt: skip
    """Fork the ranks, wait for them; each rank's exit code, stdout, stderr and writes."""
    logdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    fork = multiprocessing.get_context("fork")
    processes = [
        fork.Process(
            target=_rank_main,
            args=(rank, world, port, argv, logdir, environment or {}, crash_after, watch),
        )
        for rank in (range(world) if ranks is None else ranks)
    ]
    for p in processes:
        p.start()
    deadline = time.monotonic() + timeout
    for p in processes:
        p.join(max(1.0, deadline - time.monotonic()))
    hung = [p for p in processes if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    assert not hung, f"ranks still running after {timeout} s"
    results = []
    for rank, p in zip(range(world) if ranks is None else ranks, processes):
        read = lambda suffix, rank=rank: (logdir / f"rank{rank}.{suffix}").read_text()  # noqa: E731
        results.append(
            {
                "code": p.exitcode,
                "out": read("stdout"),
                "err": read("stderr"),
                "writes": read("writes"),
            }
        )
    return results


def _parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()])


def _deviation(reference, model) -> float:
    """``||w - w_ref|| / ||w_ref - w_0||``: the distance to the reference run's weights
    relative to how far that run moved from its initial weights ``w_0``."""
    recipe = get_recipe("tiny")
    train_set, _ = recipe_datasets("convpool_c", "textures", recipe)
    torch.manual_seed(derived_seed(0, 0, INIT))  # as train_from_spec(seed=0) does
    start = _parameters(build_model("convpool_c", train_set, recipe))
    moved = (_parameters(reference) - start).norm()
    return ((_parameters(model) - _parameters(reference)).norm() / moved).item()


@pytest.fixture(scope="module")
def reference():
    """One process, two epochs of the tiny recipe (global batch 32, random flips)."""
    torch.set_num_threads(1)
    recipe = get_recipe("tiny").replace(epochs=2)
    return train_from_spec(SPEC, recipe=recipe, device="cpu", progress=False)


# --- the default run: two ranks against one process, crash and resume -----------------------


def test_two_ranks_match_one_process_and_only_rank_0_writes(tmp_path, reference):
    runs = tmp_path / "runs"
    out = runs / "m.safetensors"
    argv = [
        "train",
        SPEC,
        "--recipe",
        "tiny",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]

    # first launch: both ranks die right after epoch 1 has been saved
    crashed = _run_ranks(argv, tmp_path / "logs1", crash_after=1, watch=runs)
    assert [r["code"] for r in crashed] == [17, 17], [r["err"][-2000:] for r in crashed]
    assert load_training_state(training_state_path(out))["epoch"] == 1

    # second launch: every rank resumes from rank 0's state and finishes epoch 2
    resumed = _run_ranks(argv, tmp_path / "logs2", watch=runs)
    assert [r["code"] for r in resumed] == [0, 0], [r["err"][-2000:] for r in resumed]
    rank0, rank1 = resumed
    assert f"resuming {out} after epoch 1" in rank0["err"]
    assert rank0["out"].startswith("test accuracy: ") and rank0["err"].count("epoch 2/2: loss") == 1

    # only rank 0 wrote, printed or showed progress; the hook saw rank 0's writes
    for run in (crashed, resumed):
        assert run[1]["writes"] == "" and run[1]["out"] == "" and run[1]["err"] == ""
        assert f"os.rename {out.parent}" in run[0]["writes"]
    assert sorted(p.name for p in runs.iterdir()) == ["m.safetensors", "m.state.pt"]

    final = load_checkpoint(out, device="cpu")
    assert final.metadata["epochs"] == 2
    assert _deviation(reference, final) < TOLERANCE
    # the epoch records combine both ranks: the training loss over all 192 items seen,
    # and the sharded test evaluation equals one evaluation of the saved model
    for mine, theirs in zip(reference.metadata["history"], final.metadata["history"]):
        assert theirs["train_loss"] == pytest.approx(mine["train_loss"], rel=1e-4)
        seen = theirs["images_per_second"] * theirs["seconds"]  # 6 steps x 32, not 6 x 16
        assert seen == pytest.approx(192)
    _, test_set = recipe_datasets("convpool_c", "textures", get_recipe("tiny"))
    whole = evaluate(final, test_set, device="cpu")
    assert final.metadata["test_accuracy"] == whole["accuracy"]
    assert final.metadata["history"][-1]["test_loss"] == pytest.approx(whole["loss"], rel=1e-5)

    # control: a rank training alone on its 16-item half-batches lands far away, so the
    # tolerance can tell a correct run from a broken one
    alone = train_from_spec(
        SPEC, recipe=get_recipe("tiny").replace(epochs=2, batch_size=16), device="cpu",
        progress=False,
    )  # fmt: skip
    assert _deviation(reference, alone) > TOLERANCE


def test_training_into_the_cache_under_two_ranks(tmp_path, reference):
    cache = tmp_path / "cache"
    argv = ["train", SPEC, "--recipe", "tiny", "--epochs", "2", "--device", "cpu", "--quiet"]
    results = _run_ranks(argv, tmp_path / "logs", environment={"CRELU_CACHE": str(cache)},
                         watch=cache)  # fmt: skip
    assert [r["code"] for r in results] == [0, 0], [r["err"][-2000:] for r in results]
    assert results[1]["writes"] == "" and results[1]["out"] == ""
    entries = list(cache.glob("convpool_c@textures-tiny-*.safetensors"))
    assert len(entries) == 1 and ".partial." not in entries[0].name
    assert _deviation(reference, load_checkpoint(entries[0], device="cpu")) < TOLERANCE
    assert results[0]["out"].startswith("test accuracy: ")


def test_augmentation_shards_are_the_global_batch_draws():
    # reference: augment() itself applied to the whole global batch
    images = torch.rand(12, 3, 9, 7)
    for recipe, shift in ((Recipe(flip=True, max_shift=2), 2), (Recipe(flip=True), 0)):
        model = torch.nn.Conv2d(3, 2, 1)
        seed = 5
        whole = augment(images, flip=True, max_shift=shift,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
        for world in (2, 3):
            for rank in range(world):
                run = RunSettings(recipe=recipe.replace(batch_size=12), device="cpu")
                trainer = Trainer(model, [(images[0], 0)], settings=run, rank=rank,
                                  world_size=world)  # fmt: skip
                trainer.max_shift = shift
                mine = trainer._augment(
                    images[rank::world].clone(), torch.Generator().manual_seed(seed)
                )
                assert torch.equal(mine, whole[rank::world])


# --- bad launches -------------------------------------------------------------------------


def test_a_world_size_that_does_not_divide_the_batch(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))  # nobody listens: must not wait
    started = time.monotonic()
    status = main(["train", SPEC, "--recipe", "tiny", "--batch-size", "33", "--device", "cpu",
                   "--out", str(tmp_path / "m.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and time.monotonic() - started < 5
    assert err.strip() == (
        "crelu train: error: the batch size 33 is not divisible by the world size 2; choose a "
        "batch size that is a multiple of the number of processes (--batch-size)"
    )
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        Trainer(torch.nn.Linear(2, 2), [(torch.zeros(2), 0)],
                settings=RunSettings(recipe=Recipe(batch_size=32)), rank=0,
                world_size=3)  # fmt: skip


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR and MASTER_PORT are not"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
        ({"RANK": "0"}, "WORLD_SIZE is not"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ],
)
def test_inconsistent_launch_variables_are_one_line(monkeypatch, capsys, environment, message):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    status = main(["train", SPEC, "--recipe", "tiny", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_missing_rendezvous_times_out_with_one_line(tmp_path):
    # rank 1 dials a port nobody listens on; rank 0 of another job waits for a rank 1
    # that never comes; both give up after the 2 s rendezvous timeout
    argv = ["train", SPEC, "--recipe", "tiny", "--device", "cpu", "--out", str(tmp_path / "m")]
    environment = {"CRELU_RENDEZVOUS_TIMEOUT": "2"}
    started = time.monotonic()
    fork = multiprocessing.get_context("fork")
    jobs = []
    for rank, port in ((1, _free_port()), (0, _free_port())):
        logdir = tmp_path / f"rank{rank}"
        logdir.mkdir()
        job = fork.Process(
            target=_rank_main, args=(rank, 2, port, argv, logdir, environment, None, None)
        )
        job.start()
        jobs.append((rank, job, logdir))
    for rank, job, logdir in jobs:
        job.join(60)
        assert not job.is_alive(), "the rendezvous did not time out"
        err = (logdir / f"rank{rank}.stderr").read_text()
        assert job.exitcode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err  # c10d's own retry logs are not shown
        assert lines[0].startswith("crelu train: error: no rendezvous of 2 processes at 127.0.0")
        assert f"within 2 s (this is rank {rank})" in lines[0]
    assert time.monotonic() - started < 40
    assert not (tmp_path / "m").exists()


def test_outside_torchrun_nothing_is_distributed():
    assert distributed_environment() is None
    with distributed(device="cpu") as context:
        assert context is None and current_context() is None
    assert distributed_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None


# --- torchrun itself (slow: a launcher and two fresh interpreters) ----------------------------


@pytest.mark.slow
def test_torchrun_end_to_end_matches_one_process(tmp_path):
    runs = tmp_path / "runs"
    out = runs / "m.safetensors"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    # every worker records its writes under runs/ (sitecustomize runs at start-up)
    (hooks / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_distributed import _watch_writes\n"
        "if os.environ.get('RANK') is not None:\n"
        f"    _log = open(os.path.join({str(tmp_path)!r}, 'writes-' + os.environ['RANK']), 'w',"
        " buffering=1)\n"
        f"    _watch_writes({str(runs)!r}, _log)\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), *sys.path[1:]]),
                       OMP_NUM_THREADS="1")  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_free_port()}",
        "-m", "invert", "train", SPEC, "--recipe", "tiny", "--epochs", "1", "--device", "cpu",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy: ") == 1
    assert (tmp_path / "writes-1").read_text() == ""
    assert str(out.parent) in (tmp_path / "writes-0").read_text()
    assert sorted(p.name for p in runs.iterdir()) == ["m.safetensors", "m.state.pt"]
    one = train_from_spec(SPEC, recipe=get_recipe("tiny").replace(epochs=1), device="cpu",
                          progress=False)  # fmt: skip
    assert _deviation(one, load_checkpoint(out, device="cpu")) < TOLERANCE


@pytest.mark.slow
def test_protocols_under_two_ranks_match_one_process(tmp_path, capsys):
    # Single: both ranks stop at the same epoch (the stopping loss is all-reduced);
    # tencrop: the ranks' shares of the test set add up to the one-process counts
    checkpoint = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_checkpoint(create_model("convpool_c", num_classes=13, width=0.125), checkpoint,
                    data="textures", recipe=get_recipe("tiny").to_dict())  # fmt: skip
    commands = {
        "single": ["evaluate", SPEC, "--protocol", "single", "--recipe", "tiny", "--epochs", "2"],
        "tencrop": ["evaluate", str(checkpoint), "--protocol", "tencrop"],
    }
    for name, argv in commands.items():
        argv = [*argv, "--device", "cpu", "--quiet", "--json"]
        assert main(argv) == 0
        alone = json.loads(capsys.readouterr().out)
        ranks = _run_ranks(argv, tmp_path / name)
        assert [r["code"] for r in ranks] == [0, 0], [r["err"][-2000:] for r in ranks]
        assert ranks[1]["out"] == "" and ranks[1]["err"] == ""
        together = json.loads(ranks[0]["out"])
        if name == "tencrop":
            assert together == alone
        else:
            assert together["epochs"] == alone["epochs"]
            assert together["target_epoch"] == alone["target_epoch"]
            for key in ("target_loss", "train_loss", "test_loss"):
                assert together[key] == pytest.approx(alone[key], rel=1e-3)

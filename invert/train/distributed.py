"""Data-parallel training across processes and machines with ``torch.distributed``.

Launch any training command with ``torchrun``; nothing else changes::

    torchrun --nproc_per_node 4 -m invert train vgg_crelu1@cifar10:/data/cifar \\
        --recipe paper --out runs/vgg.safetensors

    # two machines, 8 GPUs each; run on both, with --node_rank 0 and 1
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 \\
        --rdzv_backend c10d --rdzv_endpoint node0.example:29500 \\
        -m invert train allcnn_b_crelu1_4@folder:/data/imagenet --recipe paper --out ab.safetensors

How it works (ours):

* **Environment.** ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`distributed` reads them, binds the
  process to ``cuda:LOCAL_RANK`` with NCCL on GPUs (gloo on CPUs) and initialises the
  process group. ``WORLD_SIZE`` unset or 1 means an ordinary single-process run:
  no process group, bit-identical to running without ``torchrun``.
* **Rendezvous timeout.** Joining the group waits at most
  ``$CRELU_RENDEZVOUS_TIMEOUT`` seconds (default 60); a missing or unreachable
  rendezvous is then one line of error, not a hang. The collectives of training run
  in a second group with a long timeout (30 minutes), so a slow checkpoint write or
  evaluation on one rank does not abort the others.
* **Batches.** The recipe's ``batch_size`` is the *global* batch: each of the ``N``
  ranks takes ``batch_size / N`` items per step (a world size that does not divide
  it is an error), the ranks' shares of an epoch come from
  :func:`~invert.train.epoch_order` (the interleaved sharding of
  :class:`torch.utils.data.DistributedSampler`), and
  :class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients. Flips
  and shifts are drawn for the global batch, so ``N`` processes see the same
  augmented items as one; dropout masks are drawn per rank; BatchNorm normalises
  each rank's share (its running statistics are taken from rank 0 after every
  epoch, so all ranks evaluate, and rank 0 saves, the same model).
* **Evaluation** is sharded: rank ``r`` evaluates test items ``r, r + N, ...`` and the
  summed losses and counts of correct answers are all-reduced, so every rank gets
  the exact test accuracy of the whole set (the loss up to float64 rounding). The
  epoch's training loss and accuracy are all-reduced the same way.
* **Files and output.** Only rank 0 writes checkpoints and training states and shows
  progress; ``crelu`` commands print their results on rank 0 only. On resume, rank 0
  reads the training state and broadcasts it, so every rank continues from the same
  state even when only rank 0's machine holds the file.
* **Teardown.** The process group is destroyed when the ``with`` block ends, also on
  errors. When one rank fails, ``torchrun`` stops the others.

Not covered: ``SyncBatchNorm`` (BatchNorm statistics stay per rank, as in
DistributedDataParallel's default), models with parameters unused in the forward
pass (DistributedDataParallel's ``find_unused_parameters`` is off), and elastic
membership changes (``--max-restarts`` restarts resume from the last checkpoint).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError

from .evaluation import evaluation_sums, mean_loss_and_accuracy
from .loop import Trainer
from .settings import RunSettings
from .state import training_state_path

__all__ = [
    "DistributedContext",
    "DistributedTrainer",
    "broadcast_object",
    "current_context",
    "distributed",
    "distributed_environment",
    "init_distributed",
    "is_main_process",
    "make_trainer",
    "shutdown_distributed",
]

DEFAULT_RENDEZVOUS_TIMEOUT = 60.0  # seconds
DEFAULT_COLLECTIVE_TIMEOUT = 1800.0  # seconds
_TIMEOUT_VARIABLE = "CRELU_RENDEZVOUS_TIMEOUT"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a distributed run.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, and rank on this machine.
    device : torch.device
        ``cuda:LOCAL_RANK`` on GPUs, ``cpu`` otherwise.
    backend : str
        ``nccl`` or ``gloo``.
    group : torch.distributed.ProcessGroup
        The group the training collectives run in (all ranks, long timeout).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    group: object
    owns_default_group: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CONTEXT: DistributedContext | None = None


def current_context() -> DistributedContext | None:
    """The active :class:`DistributedContext`, or None outside :func:`distributed`.

    Examples
    --------
    >>> current_context() is None
    True
    """
    return _CONTEXT


def _int_variable(environ, name: str) -> int:
    text = environ.get(name, "").strip()
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not an integer") from None


def distributed_environment(environ=None) -> dict | None:
    """The ranks and rendezvous address set by ``torchrun``, or None for a single process.

    Parameters
    ----------
    environ : mapping, optional
        Defaults to ``os.environ``.

    Returns
    -------
    dict or None
        ``rank``, ``world_size``, ``local_rank``, ``master_addr``, ``master_port``;
        None when ``WORLD_SIZE`` is unset or 1.

    Raises
    ------
    UserError
        When the variables are inconsistent or the rendezvous address is missing.

    Examples
    --------
    >>> env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    >>> distributed_environment(env)["rank"], distributed_environment({}) is None
    (1, True)
    """
    environ = os.environ if environ is None else environ
    if not environ.get("WORLD_SIZE", "").strip():
        if environ.get("RANK", "").strip() or environ.get("LOCAL_RANK", "").strip():
            raise UserError(
                "RANK/LOCAL_RANK are set but WORLD_SIZE is not; launch with torchrun, which "
                "sets them all"
            )
        return None
    world_size = _int_variable(environ, "WORLD_SIZE")
    if world_size < 1:
        raise UserError(f"WORLD_SIZE must be at least 1; got {world_size}")
    if world_size == 1:
        return None
    missing = [n for n in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not environ.get(n, "").strip()]
    if missing:
        raise UserError(
            f"WORLD_SIZE={world_size} is set but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not: launch with torchrun (it sets RANK, "
            f"WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or set them all"
        )
    rank = _int_variable(environ, "RANK")
    if not 0 <= rank < world_size:
        raise UserError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    local_rank = _int_variable(environ, "LOCAL_RANK") if environ.get("LOCAL_RANK") else rank
    if local_rank < 0:
        raise UserError(f"LOCAL_RANK must be >= 0; got {local_rank}")
    return {
        "rank": rank,
        "world_size": world_size,
        "local_rank": local_rank,
        "master_addr": environ["MASTER_ADDR"].strip(),
        "master_port": _int_variable(environ, "MASTER_PORT"),
    }


def _rank_device(device, local_rank: int) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is asked for (or is the default), else the CPU."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved
    if resolved.index is not None and resolved.index != local_rank:
        raise UserError(
            f"under torchrun each process uses cuda:LOCAL_RANK (here cuda:{local_rank}); pass "
            f"--device cuda rather than {device}, and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(
            f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible on this "
            f"machine: start at most {count} processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def _timeout_seconds(timeout) -> float:
    if timeout is None:
        text = os.environ.get(_TIMEOUT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_RENDEZVOUS_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise UserError(f"{_TIMEOUT_VARIABLE}={text!r} is not a number of seconds") from None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise UserTypeError(f"timeout must be a number of seconds; got {type(timeout).__name__}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise UserError(
            f"the rendezvous timeout must be a positive number of seconds; got {timeout}"
        )
    return float(timeout)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hide what the C++ side prints on file descriptor 2 (c10d's retry logs with stack
    frames); our one-line error says what went wrong. ``CRELU_DEBUG=1`` shows it."""
    if os.environ.get("CRELU_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def init_distributed(
    *, device=None, backend: str | None = None, timeout=None
) -> DistributedContext | None:
    """Join the process group described by ``torchrun``'s environment variables.

    Prefer the context manager :func:`distributed`, which also leaves the group.

    Parameters
    ----------
    device : str or torch.device, optional
        ``None``: CUDA when available, else the CPU. ``cuda`` becomes
        ``cuda:LOCAL_RANK`` (made the current device).
    backend : {"nccl", "gloo"}, optional
        Default: NCCL on CUDA, gloo on the CPU.
    timeout : float or timedelta, optional
        Seconds to wait for all ranks to join; default ``$CRELU_RENDEZVOUS_TIMEOUT``
        or 60.

    Returns
    -------
    DistributedContext or None
        None when this is not a distributed run (``WORLD_SIZE`` unset or 1).

    Raises
    ------
    UserError
        On inconsistent variables, a bad device, or when the rendezvous cannot be
        reached or not every rank joins within ``timeout`` (one line).
    """
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    env = distributed_environment()
    if env is None:
        return None
    rank, world_size, local_rank = env["rank"], env["world_size"], env["local_rank"]
    resolved = _rank_device(device, local_rank)
    backend = backend or ("nccl" if resolved.type == "cuda" else "gloo")
    if backend not in ("nccl", "gloo"):
        raise UserError(f"backend must be 'nccl' or 'gloo'; got {backend!r}")
    if backend == "nccl" and resolved.type != "cuda":
        raise UserError("the NCCL backend needs CUDA devices; use gloo on the CPU")
    seconds = _timeout_seconds(timeout)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owns = not dist.is_initialized()
    if owns:
        where = f"{env['master_addr']}:{env['master_port']}"
        try:
            with _quiet_native_stderr():
                dist.init_process_group(
                    backend,
                    rank=rank,
                    world_size=world_size,
                    timeout=datetime.timedelta(seconds=seconds),
                )
        except (RuntimeError, ValueError) as error:  # DistError derives from RuntimeError
            reason = _first_line(error).rstrip(".")
            raise UserError(
                f"no rendezvous of {world_size} processes at {where} within {seconds:g} s "
                f"(this is rank {rank}): {reason}; start every rank (torchrun "
                f"--nnodes/--nproc_per_node), check --rdzv_endpoint or MASTER_ADDR/MASTER_PORT, "
                f"or raise {_TIMEOUT_VARIABLE}"
            ) from None
    try:
        group = dist.new_group(
            backend=backend, timeout=datetime.timedelta(seconds=DEFAULT_COLLECTIVE_TIMEOUT)
        )
    except BaseException:
        if owns:
            dist.destroy_process_group()
        raise
    _CONTEXT = DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=resolved,
        backend=backend,
        group=group,
        owns_default_group=owns,
    )
    return _CONTEXT


def shutdown_distributed() -> None:
    """Leave the process group joined by :func:`init_distributed` (no-op outside one)."""
    global _CONTEXT
    context, _CONTEXT = _CONTEXT, None
    if context is None or not dist.is_initialized():
        return
    try:
        dist.destroy_process_group(context.group)
    finally:
        if context.owns_default_group:
            dist.destroy_process_group()


@contextlib.contextmanager
def distributed(*, device=None, backend: str | None = None, timeout=None):
    """Run the block as one rank of a ``torchrun`` job, or as a single process.

    Inside the block, :func:`~invert.train.train`, :func:`~invert.train.train_from_spec`
    and the protocols of :mod:`invert.train.protocols` train data-parallel. The group is
    left when the block ends, also on errors. Outside ``torchrun`` (``WORLD_SIZE``
    unset or 1) it yields None and changes nothing.

    Parameters are those of :func:`init_distributed`.

    Examples
    --------
    >>> from invert.train import get_recipe, train_from_spec
    >>> with distributed(device="cpu") as context:  # under torchrun: one rank of many
    ...     net = train_from_spec("convpool_c@textures", recipe=get_recipe("tiny").replace(
    ...         epochs=1, options={"train_per_class": 4, "test_per_class": 2}),
    ...         device="cpu", progress=False)
    >>> context is None, net.metadata["epochs"]
    (True, 1)
    """
    context = init_distributed(device=device, backend=backend, timeout=timeout)
    try:
        yield context
    finally:
        if context is not None:
            shutdown_distributed()


def is_main_process() -> bool:
    """True outside a distributed run and on rank 0 of one (who prints and writes)."""
    return _CONTEXT is None or _CONTEXT.rank == 0


def broadcast_object(value, *, src: int = 0):
    """``value`` from rank ``src`` on every rank (itself outside a distributed run)."""
    context = _CONTEXT
    if context is None:
        return value
    payload = [value if context.rank == src else None]
    device = context.device if context.backend == "nccl" else None
    dist.broadcast_object_list(payload, src=src, group=context.group, device=device)
    return payload[0]


class DistributedTrainer(Trainer):
    """:class:`~invert.train.loop.Trainer` for one rank of a process group.

    Made by :func:`make_trainer` inside :func:`distributed`; takes the arguments of
    :class:`~invert.train.loop.Trainer` (without ``rank``/``world_size``, which come from
    ``context``). The device is the context's (the settings' ``device``, if given, must be
    of the same type).
    """

    def __init__(self, model: nn.Module, train_set, *, context: DistributedContext,
                 test_set=None, settings: RunSettings | None = None):  # fmt: skip
        settings = RunSettings() if settings is None else settings
        device = settings.device
        if device is not None and resolve_device(device).type != context.device.type:
            raise UserError(
                f"this rank runs on {context.device}, not {device}: pass the device to "
                f"distributed(device=...)"
            )
        super().__init__(model, train_set, test_set=test_set,
                         settings=settings.replace(device=context.device),
                         rank=context.rank, world_size=context.world_size)  # fmt: skip
        self.context = context

    def wrap_model(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # the constructor broadcasts rank 0's parameters and buffers to every rank
        return DistributedDataParallel(
            model, device_ids=device_ids, process_group=self.context.group
        )

    def _all_reduce(self, values: list) -> list[float]:
        totals = torch.stack(
            [
                torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(())
                for v in values
            ]
        )
        dist.all_reduce(totals, group=self.context.group)
        return totals.tolist()

    def _reduce_totals(self, loss_sum, correct, seen):
        # counts below 2**53 are exact in float64
        loss, hits, count = self._all_reduce([loss_sum, correct, float(seen)])
        return torch.tensor(loss, dtype=torch.float64), torch.tensor(int(hits)), int(count)

    def evaluate_on(self, dataset) -> dict:
        indices = torch.arange(self.rank, len(dataset), self.world_size)
        loss, correct, count = evaluation_sums(
            self.model,
            dataset,
            indices.split(self.recipe.hardware.eval_batch_size),
            device=self.device,
            amp=self.recipe.hardware.amp,
            channels_last=self.channels_last,
        )
        loss, correct, count = self._all_reduce([loss, correct, float(count)])
        return mean_loss_and_accuracy(loss, correct, count)

    def _load_state(self) -> dict | None:
        # rank 0 decides and reads; the others receive its state (their machine may not
        # hold the file), or its error, so that every rank raises the same one
        message = None
        if self.is_main:
            try:
                message = ("state", super()._load_state())
            except (ValueError, OSError) as error:
                message = ("error", f"{_first_line(error)}")
        kind, value = broadcast_object(message)
        if kind == "error":
            path = training_state_path(self.out) if self.out is not None else "the training state"
            raise UserError(value if self.is_main else f"rank 0 cannot resume from {path}: {value}")
        return value

    def run_epoch(self, epoch: int) -> dict:
        record = super().run_epoch(epoch)
        # BatchNorm running statistics were last updated by each rank's own share of the
        # final step; take rank 0's so that all ranks evaluate the model rank 0 saves
        for buffer in self.model.buffers():
            dist.broadcast(buffer.data, src=0, group=self.context.group)
        return record


def make_trainer(model: nn.Module, train_set, *, test_set=None,
                 settings: RunSettings | None = None) -> Trainer:  # fmt: skip
    """A :class:`~invert.train.loop.Trainer`, or a :class:`DistributedTrainer` inside
    :func:`distributed` (a ``torchrun`` job).

    Examples
    --------
    >>> from torch import nn
    >>> trainer = make_trainer(nn.Linear(2, 2), [(torch.zeros(2), 0), (torch.ones(2), 1)],
    ...                        settings=RunSettings(recipe="tiny", device="cpu"))
    >>> type(trainer).__name__, trainer.world_size
    ('Trainer', 1)
    """
    context = current_context()
    if context is None:
        return Trainer(model, train_set, test_set=test_set, settings=settings)
    return DistributedTrainer(model, train_set, context=context, test_set=test_set,
                              settings=settings)  # fmt: skip

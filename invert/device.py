"""Where computations run: the one device resolution of the toolkit."""

from __future__ import annotations

import contextlib
import os

import torch

from invert.errors import UserError

__all__ = [
    "SMALL_INPUT_PIXELS",
    "available_memory",
    "check_memory",
    "cpu_threads",
    "format_bytes",
    "intra_op_threads",
    "resolve_device",
]

#: Inputs up to this many pixels run on one CPU thread (:func:`cpu_threads`): their
#: convolutions take about a millisecond, and with two threads each one pays a
#: synchronisation that costs more than it saves (bench/RESULTS.md: on a shared 2-core
#: machine a 32 px float64 conv + transpose took 1.6 ms on one thread, 13 ms on two).
SMALL_INPUT_PIXELS = 64 * 64


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; otherwise the named device.

    A CUDA device asked for on a machine without one is a ``ValueError`` that says so.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return resolved


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can be allocated now on ``device`` (``MemAvailable`` of ``/proc/meminfo``
    for the CPU, the free memory of a CUDA device); ``None`` when unknown.

    Examples
    --------
    >>> free = available_memory("cpu")
    >>> free is None or free > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``1.5e9`` -> ``'1.5 GB'`` (powers of 1000).

    Examples
    --------
    >>> format_bytes(440e9), format_bytes(2050)
    ('440 GB', '2.05 kB')
    """
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(count) < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_memory(needed: int | None, device, what: str, advice: str) -> None:
    """A one-line :class:`~invert.errors.UserError` when ``what`` needs more than ``device``
    has available, raised before anything is allocated (``needed`` in bytes; ``None``:
    unknown, no check).

    Examples
    --------
    >>> check_memory(10**16, "cpu", "a forward pass", "use a smaller input size")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: a forward pass needs about 10 PB of memory, more than ...
    """
    if needed is None:
        return
    device = resolve_device(device) if device is not None else torch.device("cpu")
    free = available_memory(device)
    if free is not None and needed > free:
        where = "this machine has available" if device.type == "cpu" else f"{device} has free"
        raise UserError(
            f"{what} needs about {format_bytes(needed)} of memory, more than {where} "
            f"({format_bytes(free)}); {advice}"
        )


@contextlib.contextmanager
def intra_op_threads(count: int | None):
    """Run the block with ``count`` intra-op threads (None: as they are), restored after.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with intra_op_threads(1):
    ...     inside = torch.get_num_threads()
    >>> inside, torch.get_num_threads() == before
    (1, True)
    """
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_threads(pixels: int, *, threads: int | None = None):
    """Run the block on ``threads`` CPU threads, or on one for inputs of at most
    :data:`SMALL_INPUT_PIXELS` pixels (torch's own count otherwise); restored after.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with cpu_threads(32 * 32):
    ...     inside = torch.get_num_threads()
    >>> inside, torch.get_num_threads() == before
    (1, True)
    """
    return intra_op_threads(threads or (1 if pixels <= SMALL_INPUT_PIXELS else None))

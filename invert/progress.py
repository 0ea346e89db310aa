"""The one progress convention of the library: ``progress: bool`` on every public function.

``progress=True`` shows what a call does on stderr (a tqdm bar for counted work, one line
for a stage); ``False`` keeps it silent. Library code never prints otherwise: it calls
:func:`progress_bar` or :func:`say`, which do nothing when ``progress`` is false.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar", "say"]


def progress_bar(progress: bool, iterable=None, *, total=None, desc: str | None = None,
                 unit: str = "it", leave: bool = False):  # fmt: skip
    """A tqdm bar on stderr; disabled (silent, same methods) when not ``progress``.

    tqdm only prints a rate and an ETA once it has seen a few updates, so an ETA, when it
    shows, rests on measured steps.

    Examples
    --------
    >>> with progress_bar(False, total=3, desc="solving") as bar:
    ...     for _ in range(3):
    ...         bar.update()  # silent: nothing is printed
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=not progress, dynamic_ncols=True)  # fmt: skip


def say(progress: bool, message: str) -> None:
    """One status line on stderr (between any bars) when ``progress`` is true.

    Examples
    --------
    >>> say(False, "training 10 models")  # silent
    """
    if progress:
        tqdm.write(message, file=sys.stderr)

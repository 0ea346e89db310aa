"""The resumable training state: where it lives, the random states in it, and the check
that a state belongs to the run about to resume from it."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from invert.errors import UserError

__all__ = ["check_same_run", "restore_rng_states", "rng_states", "training_state_path"]


def training_state_path(out: str | Path) -> Path:
    """Where :func:`train` keeps the resumable state for the checkpoint ``out``.

    Examples
    --------
    >>> training_state_path("runs/model.safetensors").name
    'model.state.pt'
    """
    out = Path(out)
    state = out.with_suffix(".state.pt")
    return state if state != out else out.with_name(out.name + ".state.pt")


def rng_states() -> dict:
    """Every global random state of the process (torch, CUDA, numpy, Python).

    Examples
    --------
    >>> saved = rng_states()
    >>> a = torch.rand(2)
    >>> restore_rng_states(saved)
    >>> torch.equal(a, torch.rand(2))
    True
    """
    np_state = np.random.get_state()  # noqa: NPY002 (saving the legacy global state)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def restore_rng_states(states: Mapping) -> None:
    """Set the global random states saved by :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        # a state written on a machine with more GPUs (another node of a distributed
        # run) restores the devices this one has
        for index, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def check_same_run(saved: Mapping, now: Mapping, path) -> None:
    """A :class:`~invert.errors.UserError` when the run that wrote a state differs from ours.

    ``saved`` and ``now`` are the runs' identities (model, recipe, seed, data ...); the
    message names the first differing fields.

    Examples
    --------
    >>> check_same_run({"seed": 0}, {"seed": 0}, "m.state.pt")
    >>> check_same_run({"seed": 0}, {"seed": 1}, "m.state.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: cannot resume from m.state.pt: it was made with a different seed; ...
    """
    for key in now:
        if saved.get(key) != now[key]:
            detail = key
            if key in ("recipe", "config") and isinstance(saved.get(key), dict):
                diff = [k for k in now[key] if saved[key].get(k) != now[key].get(k)]
                detail = ", ".join(f"{key}.{k}={saved[key].get(k)!r}" for k in diff[:3])
            raise UserError(
                f"cannot resume from {path}: it was made with a different {detail}; start "
                f"over with resume=False (--no-resume) or choose another output path"
            )

"""What a reconstruction returns: :class:`Reconstruction`, its :class:`Certificate` and
its :class:`Note` s, each built once by the strategy that produced it and never edited.

A note says what the user should know about a result -- its true cause, and the one
setting that acts on it (``Note.option``); :meth:`Note.text` spells that setting for
Python (``JointSettings(max_steps=...)``) or, given a spelling table, for the command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .features import Features
    from .rules import LayerReport

__all__ = ["Certificate", "CertificateRow", "Note", "Reconstruction"]

#: How each setting a note can advise is spelled in Python.
PYTHON_SPELLING = {
    "prior": "prior='tv'",
    "strategy": "strategy='joint' (or 'auto')",
    "joint.max_steps": "JointSettings(max_steps=...)",
    "layerwise.cg_iterations": "LayerwiseSettings(cg_iterations=...)",
}


@dataclass(frozen=True)
class Note:
    """Something to know about a result: ``cause``, and ``advice`` naming ``option``.

    Examples
    --------
    >>> note = Note("stopped after 3 steps at residual 1e-04 > tol 1e-10",
    ...             option="joint.max_steps", advice="raise {option}")
    >>> note.text()
    'stopped after 3 steps at residual 1e-04 > tol 1e-10; raise JointSettings(max_steps=...)'
    >>> note.text({"joint.max_steps": "--max-steps"})
    'stopped after 3 steps at residual 1e-04 > tol 1e-10; raise --max-steps'
    """

    cause: str
    option: str | None = None
    advice: str = ""

    def text(self, spelling: Mapping[str, str] | None = None) -> str:
        if self.option is None:
            return self.cause
        name = (spelling or PYTHON_SPELLING)[self.option]
        return f"{self.cause}; {self.advice.format(option=name)}"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class CertificateRow:
    """The certificate of one image (see :mod:`invert.reconstruction.certificate`).

    ``A`` and ``B`` are the extreme eigenvalues of ``J^T J``, ``J`` the Jacobian of the
    whole map from the input to the layer at the image (not the frame bounds of one conv
    layer, :func:`theory.frame_bounds`); ``converged``: the feature residual is at ``tol``;
    ``note``: why the row is or is not unique.
    """

    residual: float
    model_residual: float
    A: float
    B: float
    ratio: float
    unique: bool
    converged: bool
    eigen_method: str
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


class Certificate:
    """One :class:`CertificateRow` per image; ``as_dict()`` gives them as dicts.

    Attributes ``residual``, ``A``, ``B``, ``ratio``, ``unique`` ... are lists over the images.
    """

    def __init__(self, rows: list[CertificateRow], *, tol: float, threshold: float):
        self.rows, self.tol, self.threshold = tuple(rows), tol, threshold

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> CertificateRow:
        return self.rows[i]

    def __iter__(self):
        return iter(self.rows)

    def __getattr__(self, name):
        if name in CertificateRow.__dataclass_fields__:
            return [getattr(row, name) for row in self.rows]
        raise AttributeError(name)

    def as_dict(self) -> list[dict]:
        return [row.as_dict() for row in self.rows]

    def __repr__(self) -> str:
        unique = sum(r.unique for r in self.rows)
        worst = max((r.residual for r in self.rows), default=math.nan)
        return (f"Certificate({unique} of {len(self.rows)} unique, worst residual {worst:.1e}, "
                f"tol {self.tol:.0e})")  # fmt: skip


@dataclass(frozen=True)
class Reconstruction:
    """The result of :func:`~invert.reconstruction.reconstruct`, whatever the strategy.

    Attributes
    ----------
    image : torch.Tensor
        ``(N, C, H, W)`` estimate of the model input.
    features : Features
        The features it was computed from.
    strategy : str
        ``"layerwise"`` or ``"joint"``: what made ``image``.
    tol : float
        The relative feature residual taken as converged.
    certificate : Certificate or None
        One row per image (:mod:`invert.reconstruction.certificate`); None from
        :func:`~invert.reconstruction.reconstruct_layerwise` called by name.
    layers : tuple of LayerReport
        The layer-wise walk, one report per operation from the layer down to the input
        (empty when no layer-wise walk made the image).
    history : tuple of dict
        The joint solve's Gauss-Newton steps (empty for layer-wise).
    start : str or None
        Where the joint solve started (``"layerwise"``, ``"x0"``, ``"zeros"`` ...).
    status : tuple of str
        Per image, how the joint solve ended (``"converged"``, ``"stalled"``, ...).
    notes : tuple of Note
        What to know about the result: each note's true cause and the setting that acts
        on it; ``note`` is the counting note alone (the map is not injective), or None.
    settings : dict
        The options used (plain values, for JSON).
    diagnostics : dict
        From ``strategy="auto"``: the residual of each strategy and which won.
    seconds : dict
        Wall time of the parts (``"solve"``, ``"certificate"``).
    """

    image: torch.Tensor
    features: Features
    strategy: str
    tol: float
    certificate: Certificate | None = None
    layers: tuple[LayerReport, ...] = ()
    history: tuple[dict, ...] = ()
    start: str | None = None
    status: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    note: str | None = None
    settings: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether every image's feature residual reached ``tol`` (and, for a layer-wise
        result, every layer's solve); a joint result does not depend on its start's solves."""
        rows = self.certificate.rows if self.certificate is not None else ()
        layers = self.layers if self.strategy == "layerwise" else ()
        return all(r.converged for r in layers) and all(r.converged for r in rows)

    def report(self) -> list[dict]:
        """The per-layer diagnostics as a list of dicts (for tables and JSON)."""
        return [r.as_dict() for r in self.layers]

    def __repr__(self) -> str:
        return (
            f"Reconstruction(layer={self.features.layer!r}, image={tuple(self.image.shape)}, "
            f"strategy={self.strategy!r}, converged={self.converged}, "
            f"certificate={self.certificate!r})"
        )

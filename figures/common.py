"""What the figure scripts share: the model session, analysis sizes, output helpers.

A :class:`Session` holds the run's settings (data spec, training recipe, model cache,
device) and every model and data set it has loaded, so that the scripts run by
:func:`figures.run_all.run_figures` train or load each model once and share it. Each
script also runs on its own (``python -m figures.fig1_filter_pairs --out DIR``):
:func:`run_standalone` parses the common options, builds a session and turns user
mistakes into one line on stderr with exit status 2, as ``crelu`` does.

The models (ConvPool-CNN-C of the paper's Table 1, Springenberg et al. 2014) are
referred to by their role: ``relu`` (the baseline), ``crelu`` (CReLU, same filters),
``double``, ``avr`` and ``crelu_half``.

Analysis sizes (ours) grow with the recipe, so that ``tiny`` is a smoke test of
seconds, ``fast`` a real but small run on two CPU cores and ``paper`` the paper's
scale (see :data:`ANALYSIS_SIZES`).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from invert.display import json_ready, psnr_text, table_text, write_json
from invert.errors import UserError
from invert.files import check_writable

__all__ = [
    "MODELS",
    "FIRST_SEED_ONLY",
    "FORMATS",
    "SLIDE_DPI",
    "SEED",
    "AnalysisSizes",
    "Result",
    "pixel_size",
    "script",
    "table_script",
    "ANALYSIS_SIZES",
    "Session",
    "check_output_dir",
    "save_figure",
    "write_json",
    "markdown_table",
    "json_ready",
    "machine_info",
    "run_standalone",
]

#: Seed of every random choice the scripts make (images, random filters, crops).
SEED = 0

#: Per-column text of the report tables: PSNR with its one cap convention.
_REPORT_FORMATS = {"psnr": lambda value: psnr_text(float(value), unit=False)}

#: Role -> zoo name: the five ConvPool-CNN-C variants of the paper's Table 1 (Tables 1
#: and 6, Figs. 4-5) and the AlexNet-layout pair of Figs. 1-3 (``alex_relu``,
#: ``alex_crelu``: AlexNet's conv1 of 96 filters of 11x11x3, where the paper observed
#: the pairing).
MODELS = {
    "relu": "convpool_c",
    "double": "convpool_c_double",
    "avr": "convpool_c_avr",
    "crelu": "convpool_c_crelu",
    "crelu_half": "convpool_c_crelu_half",
    "alex_relu": "alexnet64",
    "alex_crelu": "alexnet64_crelu",
}

#: Roles trained for the first seed only: Table 1's context rows, which no finding
#: compares (each further seed costs the others' matched runs; ``double`` alone costs
#: four baselines).
FIRST_SEED_ONLY = ("double", "avr")

#: File formats of the figures (``--format``); PNGs are drawn at :data:`SLIDE_DPI`.
FORMATS = ("png", "svg", "pdf")
#: Dots per inch of the PNGs: a 13-inch figure is 2600 px wide, enough for a slide.
SLIDE_DPI = 200


@dataclass(frozen=True)
class AnalysisSizes:
    """How much work each analysis does (ours; larger is more precise and slower).

    Attributes
    ----------
    pairing_trials : int
        Random filter sets per layer for the Gaussian baseline of Figs. 1-3.
    invariance_images : int
        Natural images for the invariance scores of Fig. 4 (at least 100: the 1%
        firing rate needs one firing image per unit).
    reconstruction_images : int
        Test images reconstructed for Fig. 5 (the first one is shown).
    reconstruction_max_iter : int
        Iteration limit of each least-squares solve of the reconstructions.
    pooling_images : int
        Crops per layer for the max-pooling metrics.
    pooling_max_dim : int
        Largest layer-input dimension of the pooling metrics' dense rank and frame
        bounds; the crop size is chosen to fit it.
    reconstruction_large_size : int
        Side of Fig. 5's second, larger input (the models are fully convolutional up to
        their global pooling); 0 for none.
    """

    pairing_trials: int
    invariance_images: int
    reconstruction_images: int
    reconstruction_max_iter: int
    pooling_images: int
    pooling_max_dim: int
    reconstruction_large_size: int = 0


ANALYSIS_SIZES = {
    "tiny": AnalysisSizes(2, 100, 1, 100, 1, 512, 48),
    "fast": AnalysisSizes(10, 200, 1, 300, 2, 2048, 64),
    "paper": AnalysisSizes(100, 1000, 4, 1000, 8, 4096, 128),
}


def _recipe_name(recipe) -> str:
    return recipe if isinstance(recipe, str) else getattr(recipe, "name", "custom")


def check_output_dir(out) -> Path:
    """Create ``out`` if needed and make sure files can be written there.

    Raises ``PermissionError`` (one line: which folder, why, what to do) before any
    work starts, so a long run never fails at its last step.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "figs"
    >>> check_output_dir(folder).is_dir()
    True
    """
    path = Path(out).expanduser()
    check_writable(path, "the output folder", "choose another --out")
    return path


@dataclass
class Session:
    """Settings of a run and the models and data it has loaded (shared by the scripts).

    Parameters
    ----------
    data : str
        Data spec for :func:`invert.data.load_dataset` (``textures``, ``cifar10:PATH``...).
    recipe : str or invert.train.Recipe
        Training recipe of the models (``tiny``, ``fast``, ``paper``).
    sizes : str or AnalysisSizes, optional
        How much work the analyses do: a key of :data:`ANALYSIS_SIZES` or your own.
        Default: the sizes named like the recipe (``fast`` for a custom recipe), so a
        ``tiny`` run is a smoke test throughout.
    cache_dir : path, optional
        Model cache (default: the loader's, ``$CRELU_CACHE`` or ``~/.cache/crelu``).
    device : str, optional
        ``None``: CUDA when available, else CPU.
    progress : bool
        Show training progress on stderr.
    train_if_missing : bool
        Train models missing from the cache (else ``FileNotFoundError``).
    seeds : int
        Training runs per variant (seeds ``0 .. seeds - 1``; one for
        :data:`FIRST_SEED_ONLY`); the findings that compare trained models use the
        per-seed differences of matched runs (:mod:`figures.findings`).
    format : {"png", "svg", "pdf"}
        File format of the figures.

    Examples
    --------
    >>> session = Session(recipe="tiny", seeds=2)
    >>> session.sizes.invariance_images, session.spec("crelu"), session.runs()[:2]
    (100, 'convpool_c_crelu@textures', [('relu', 0), ('double', 0)])
    >>> [role for role, seed in session.runs() if seed == 1]
    ['relu', 'crelu', 'crelu_half', 'alex_relu', 'alex_crelu']
    """

    data: str = "textures"
    recipe: object = "fast"
    cache_dir: str | os.PathLike | None = None
    device: str | None = None
    progress: bool = True
    train_if_missing: bool = True
    sizes: AnalysisSizes | str | None = None
    seeds: int = 1
    format: str = "png"
    _models: dict = field(default_factory=dict, repr=False)
    _test_set: object = field(default=None, repr=False)

    def __post_init__(self):
        from invert.device import resolve_device
        from invert.train.recipe import get_recipe

        get_recipe(self.recipe)  # unknown names fail here, before any work
        if not isinstance(self.data, str) or not self.data.strip():
            raise UserError("data must be a data set spec such as textures or cifar10:PATH")
        self.data = self.data.strip()
        self.device = str(resolve_device(self.device))
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise UserError(f"seeds must be a positive integer; got {self.seeds!r}")
        if self.format not in FORMATS:
            raise UserError(
                f"unknown figure format {self.format!r}; choose one of {', '.join(FORMATS)}"
            )
        if self.sizes is None:
            self.sizes = self.recipe_name if self.recipe_name in ANALYSIS_SIZES else "fast"
        if isinstance(self.sizes, str):
            if self.sizes not in ANALYSIS_SIZES:
                raise UserError(
                    f"unknown analysis sizes {self.sizes!r}; valid: {', '.join(ANALYSIS_SIZES)}"
                )
            self.sizes = ANALYSIS_SIZES[self.sizes]

    @property
    def recipe_name(self) -> str:
        return _recipe_name(self.recipe)

    def spec(self, role: str) -> str:
        """``MODEL@DATA`` of a role (``relu``, ``crelu``, ...)."""
        if role not in MODELS:
            raise UserError(f"unknown model role {role!r}; valid roles: {', '.join(MODELS)}")
        return f"{MODELS[role]}@{self.data}"

    def recipe_for(self, role: str):
        from invert.train.recipe import get_recipe

        return get_recipe(self.recipe, arch=MODELS[role])

    def runs(self) -> list[tuple[str, int]]:
        """Every ``(role, seed)`` the session trains, seed by seed (the roles of
        :data:`FIRST_SEED_ONLY` with the first seed only)."""
        return [(role, seed) for seed in self.seed_list() for role in MODELS
                if seed == SEED or role not in FIRST_SEED_ONLY]  # fmt: skip

    def seed_list(self, role: str | None = None) -> list[int]:
        """The seeds of the run (of ``role``: one for :data:`FIRST_SEED_ONLY`)."""
        if role in FIRST_SEED_ONLY:
            return [SEED]
        return [SEED + k for k in range(self.seeds)]

    def figure_name(self, stem: str) -> str:
        """The file name of a figure in the session's format (``fig1_filter_pairs.png``)."""
        return f"{stem}.{self.format}"

    def reproduce(self, stem: str) -> str:
        """The command that recomputes a script's table with this session's settings."""
        import shlex

        parts = ["python", "-m", f"figures.{stem}", "--out", "DIR", "--data", self.data,
                 "--recipe", self.recipe_name, "--seeds", str(self.seeds)]  # fmt: skip
        if self.format != "png":
            parts += ["--format", self.format]
        return " ".join(shlex.quote(p) for p in parts)

    def cache_file(self, role: str, seed: int = SEED) -> Path:
        """Where the loader caches (or would cache) the model of ``role`` and ``seed``."""
        from invert.train.loader import cache_path

        return cache_path(
            self.spec(role), recipe=self.recipe_for(role), cache_dir=self.cache_dir, seed=seed
        )

    def is_cached(self, role: str, seed: int = SEED) -> bool:
        return self.cache_file(role, seed).is_file()

    def model(self, role: str, seed: int = SEED):
        """The trained model of ``role`` and ``seed`` (eval mode), loaded once per session."""
        if (role, seed) not in self._models:
            from invert.train.loader import load_model

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._models[role, seed] = load_model(
                    self.spec(role),
                    recipe=self.recipe_for(role),
                    device=self.device,
                    cache_dir=self.cache_dir,
                    train_if_missing=self.train_if_missing,
                    progress=self.progress,
                    seed=seed,
                )
        return self._models[role, seed]

    def test_set(self):
        """The held-out split of the data (as the models were tested on it)."""
        if self._test_set is None:
            from invert.data import DataSpec, load_dataset
            from invert.nn.zoo import model_info

            spec = DataSpec.parse(self.data)
            size = spec.image_size(model_info(MODELS["relu"])["input_size"])
            options = spec.options(self.recipe_for("relu").data.options)
            self._test_set = load_dataset(
                self.data, split="test", image_size=size, seed=SEED, **options
            )
        return self._test_set

    def check_cache_writable(self) -> None:
        """Raise ``PermissionError`` now if a model must be trained into an unwritable cache."""
        missing = [run for run in self.runs() if not self.is_cached(*run)]
        if missing and self.train_if_missing:
            check_writable(
                self.cache_file("relu").parent, "the model cache",
                "pass --cache-dir DIR or set CRELU_CACHE to a writable folder",
            )  # fmt: skip


# --- output helpers ------------------------------------------------------------------


@dataclass
class Result:
    """What a figure or table script returns; the report and the findings read its fields.

    Attributes
    ----------
    id : str
        ``fig1`` ... ``fig5``, ``table1``, ``table6``, ``frame_bounds``, ``pooling``.
    title : str
        One line for the report.
    rows : list of dict
        The numbers, one dict per table row (the report prints ``columns`` of them).
    columns : list of str, optional
        The columns the report shows (default: every key of the first row).
    files : list of str
        Images written into the output folder (empty for tables).
    size : (int, int), optional
        Pixel height and width of the figure.
    details : dict
        Script-specific facts for the report (image counts, test indices, ...).
    """

    id: str
    title: str
    rows: list[dict]
    columns: list[str] | None = None
    files: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None
    details: dict = field(default_factory=dict)

    def where(self, **match) -> list[dict]:
        """The rows whose fields equal ``match`` (``result.where(model="CReLU")``)."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (``details`` merged in)."""
        out = {"id": self.id, "title": self.title, "files": list(self.files)}
        if self.size is not None:
            out["size"] = list(self.size)
        return {**out, **self.details, "columns": self.columns, "rows": self.rows}


def table_script(rows_of, *, stem: str, id: str, title: str, columns: list[str]):
    """The ``main`` of a table script (:func:`script`) from ``rows_of(session)``, the rows
    of its :class:`Result` (shown as ``columns``, with the command that recomputes them)."""

    def make(session: Session, out) -> Result:
        details = {"command": session.reproduce(stem)}
        return Result(id=id, title=title, rows=rows_of(session), columns=columns,
                      details=details)  # fmt: skip

    make.__doc__, make.__module__ = rows_of.__doc__, rows_of.__module__
    return script(make)


def pixel_size(figsize, dpi=SLIDE_DPI) -> tuple[int, int]:
    """``(height, width)`` in pixels of a PNG of ``figsize`` inches (at :data:`SLIDE_DPI`,
    the resolution :func:`save_figure` writes, whatever the figure's own dpi)."""
    return int(figsize[1] * SLIDE_DPI), int(figsize[0] * SLIDE_DPI)


def script(make):
    """The ``main(out, *, session=None, **options)`` of a script from its ``make(session, out)``.

    ``make`` draws and computes; ``main`` builds a :class:`Session` from ``options``
    (``data``, ``recipe``, ``cache_dir``, ``device``, ...) when none is given, and returns
    ``make``'s :class:`Result`.
    """

    def main(out, *, session: Session | None = None, **options) -> Result:
        return make(session or Session(**options), Path(out))

    main.__doc__ = f"""{(make.__doc__ or "").strip()}

    Parameters
    ----------
    out : path
        Existing output folder.
    session : Session, optional
        Shared models and settings; default ``Session(**options)``.
    **options
        ``data``, ``recipe``, ``cache_dir``, ``device`` for a new session.

    Returns
    -------
    Result
    """
    main.__name__ = main.__qualname__ = "main"
    main.__module__ = make.__module__
    return main


def save_figure(fig, path) -> Path:
    """Write a matplotlib figure atomically in the format of ``path``'s suffix (PNG, SVG
    or PDF); close it.

    A PNG is ``figsize * SLIDE_DPI`` pixels exactly (no tight bounding box), so each
    figure's size is known in advance.
    """
    import matplotlib.pyplot as plt

    from invert.files import atomic_write_bytes

    kind = Path(path).suffix.lstrip(".").lower() or "png"
    if kind not in FORMATS:
        raise UserError(f"unknown figure format {kind!r}; choose one of {', '.join(FORMATS)}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, dpi=SLIDE_DPI)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of dict rows (:func:`invert.display.table_text`,
    the one table writer), a ``psnr`` column with :func:`invert.display.psnr_text`'s cap.

    Examples
    --------
    >>> print(markdown_table([{"layer": "conv1", "A": 0.5, "psnr": 250.0},
    ...                       {"layer": "conv2", "A": None, "psnr": 15.44}]))
    | layer | A | psnr |
    |---|---|---|
    | conv1 | 0.5 | > 100 |
    | conv2 | - | 15.4 |
    """
    return table_text(rows, columns, _REPORT_FORMATS, style="markdown")


def machine_info() -> dict:
    """CPU model and count, platform, torch version and threads, GPU (for the report)."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        info["load_average"] = None
    return info


def machine_line() -> str:
    """:func:`machine_info` in one line, for benchmark records."""
    info = machine_info()
    text = f"{info['cpus']} CPUs ({info['cpu']}), {platform.system()}, torch {info['torch']}"
    return text + (f", GPU {info['gpu']}" if info["gpu"] else "")


# --- running one script on its own ---------------------------------------------------------


def _arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default="crelu-figures", help="output folder (created)")
    parser.add_argument(
        "--data",
        default="textures",
        help="textures (embedded default), cifar10:PATH, cifar100:PATH or folder:PATH",
    )
    parser.add_argument("--recipe", default="fast", help="tiny, fast or paper (default: fast)")
    parser.add_argument("--cache-dir", help="model cache (default: $CRELU_CACHE or ~/.cache/crelu)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="training runs per variant, seeds 0..N-1 (default: 1)")  # fmt: skip
    parser.add_argument("--format", default="png", choices=FORMATS,
                        help="file format of the figure (default: png)")  # fmt: skip
    return parser


def run_standalone(main, doc: str, stem: str, argv=None) -> int:
    """Entry of ``python -m figures.SCRIPT``: parse options, run ``main``, write ``STEM.json``.

    User mistakes (unknown data spec, unwritable folder, ...) print one line
    ``python -m figures.STEM: error: ...`` and return 2.
    """
    from invert.errors import run_safely

    title = doc.strip().splitlines()[0]
    args = _arguments(title).parse_args(argv)
    return run_safely(f"python -m figures.{stem}", _standalone, main, stem, args)


def _standalone(main, stem: str, args) -> int:
    out = check_output_dir(args.out)
    if args.seeds < 1:
        raise UserError(f"--seeds must be a positive integer; got {args.seeds}")
    session = Session(data=args.data, recipe=args.recipe, cache_dir=args.cache_dir,
                      device=args.device, seeds=args.seeds, format=args.format)  # fmt: skip
    session.test_set()  # a data spec that does not exist fails here, before training
    session.check_cache_writable()
    result = main(out, session=session)
    write_json(out / f"{stem}.json", result.to_dict())
    print(result.title)
    for name in result.files:
        print(f"  wrote {out / name}")
    if result.rows:
        print(markdown_table(result.rows, result.columns))
    return 0

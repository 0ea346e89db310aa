"""The packages depend on each other in one direction only.

Every import statement of every module (at module level or inside a function) is read
with :mod:`ast` and resolved to the package it names; an import of a package that is
not below the importer's own fails the test, with the file and line.

    invert.device, .display, .errors, .files,     nothing of ours (.validation, .device:
                                                  .errors; .display: .files, to write
                                                  atomically)
    ._lazy, .progress, .validation, .version
    invert.linalg                                 the above
    invert.nn, invert.data                        the above and linalg
    invert.reconstruction, invert.train           the above, nn and data
    theory                                        invert (not invert.cli)
    figures                                       theory and invert (not invert.cli)
    invert.cli                                    everything
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BASE = {"invert.device", "invert.display", "invert.errors", "invert.files", "invert._lazy",
        "invert.progress", "invert.validation", "invert.version"}  # fmt: skip
LINALG = BASE | {"invert.linalg"}
LOW = LINALG | {"invert.nn", "invert.data"}
INVERT = LOW | {"invert.reconstruction", "invert.train", "invert"}
ALLOWED = {
    "invert.device": {"invert.errors"},
    "invert.display": {"invert.files"},
    "invert._lazy": set(),
    "invert.errors": set(),
    "invert.files": set(),
    "invert.progress": set(),
    "invert.validation": {"invert.errors"},
    "invert.version": set(),
    "invert.linalg": LINALG,
    "invert.nn": LINALG | {"invert.nn"},
    "invert.data": BASE | {"invert.data"},
    "invert.reconstruction": LOW | {"invert.reconstruction"},
    "invert.train": LOW | {"invert.train"},
    "invert": INVERT,  # invert/__init__.py and __main__.py re-export the layers
    "theory": INVERT | {"theory"},
    "figures": INVERT | {"theory", "figures"},
    "invert.cli": INVERT | {"theory", "figures", "invert.cli"},
}


def _unit(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: not ours)."""
    if module == "invert.__main__":  # ``python -m invert`` is the command line
        return "invert.cli"
    parts = module.split(".")
    if parts[0] not in ("invert", "theory", "figures"):
        return None
    if parts[0] != "invert" or len(parts) == 1:
        return parts[0]
    name = ".".join(parts[:2])
    return name if name in ALLOWED else "invert"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(line, absolute module) for every import in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield node.lineno, name
            for alias in node.names:  # ``from invert import train`` names a subpackage
                yield node.lineno, f"{name}.{alias.name}"


SOURCES = sorted(
    p for folder in ("invert", "theory", "figures") for p in (ROOT / folder).rglob("*.py")
)


def test_the_walk_sees_the_packages():
    assert len(SOURCES) > 40
    assert _unit("invert.nn.zoo") == "invert.nn" and _unit("theory.frames") == "theory"
    assert _unit("numpy") is None and _unit("invert") == "invert"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path):
    importer = _unit(_module_name(path))
    allowed = ALLOWED[importer]
    upward = []
    for line, name in _imports(path):
        unit = _unit(name)
        if unit is None or unit == importer:
            continue
        # ``from invert import x`` yields both "invert" and "invert.x": judge the precise one
        if unit == "invert" and name.count(".") == 0:
            continue
        if unit not in allowed:
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({unit})")
    assert not upward, "\n".join(upward)


def test_a_planted_upward_import_is_caught(tmp_path, monkeypatch):
    fake = ROOT / "invert" / "linalg" / "planted.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "from theory import frames\n")
    found = [name for _, name in _imports(fake)]
    assert "theory" in found and _unit("theory") not in ALLOWED["invert.linalg"]

"""The README's Python example runs as printed and says what the README says it does."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_reconstructs_exactly(tmp_path):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    env = dict(os.environ, CRELU_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    error = float(re.search(r"conv1: relative error (\S+)", out.stdout).group(1))
    assert error < 1e-8  # Proposition 2.1: conv1 of ConvPool-C CReLU is a frame
    # conv2 is not a frame: recovered by the default's joint inversion, certified unique
    assert float(re.search(r"conv2: relative error (\S+)", out.stdout).group(1)) < 1e-8
    assert "(joint)" in out.stdout and "4 of 4 unique" in out.stdout
    # the output shown in the README is this example's (numbers to their printed digits,
    # give or take rounding: float32 training differs in the last bits across CPUs)
    shown = re.search(r"```text\n(.*?)```", text, flags=re.S).group(1)
    number = r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
    printed = {re.sub(number, "#", line): line for line in out.stdout.splitlines()}
    for line in shown.splitlines():
        if line.strip() == "...":
            continue
        skeleton = re.sub(number, "#", line)
        assert skeleton in printed, f"not printed: {line!r}"
        for a, b in zip(re.findall(number, line), re.findall(number, printed[skeleton])):
            if "e" in a:  # an error near zero: the same order of magnitude
                assert abs(float(a)) < 1e-8 and abs(float(b)) < 1e-8, (line, printed[skeleton])
            else:
                digits = len(a.split(".")[1]) if "." in a else 0
                assert abs(float(a) - float(b)) <= 2 * 10**-digits, (line, printed[skeleton])


def _dotted_names(text: str) -> set[str]:
    """``invert.x``, ``theory.x``, ``figures.x`` (and deeper) as the README writes them."""
    return set(re.findall(r"(?<![\w./-])(?:invert|theory|figures)(?:\.[A-Za-z_]\w*)+", text))


def _resolve(name: str):
    """The object ``name`` names: the longest importable module prefix, then attributes."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)  # AttributeError: the README names nothing
        return value
    raise ModuleNotFoundError(name)


def test_every_dotted_name_in_the_readme_exists():
    names = _dotted_names(README.read_text())
    assert {"invert.nn.model_graph", "invert.train.distributed", "theory.frame_bounds"} <= names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name} ({error})")
    assert not missing, f"the README names what does not exist: {missing}"


def test_every_path_in_the_readme_exists():
    text = README.read_text()
    paths = set(re.findall(r"(?<![\w./-])((?:invert|theory|figures|bench|tests)/[\w./]*)", text))
    paths = {p.rstrip(".") for p in paths}
    assert "invert/train/distributed.py" in paths and "figures/findings.py" in paths
    missing = sorted(p for p in paths if not (README.parent / p).exists())
    assert not missing, f"the README names paths that do not exist: {missing}"


def test_the_checks_catch_a_name_or_path_that_is_not_there():
    assert _dotted_names("see `invert.distributed` and invert.nn.model_graph.") == {
        "invert.distributed", "invert.nn.model_graph"
    }  # fmt: skip
    for name in ("invert.distributed", "invert.protocols"):  # named before issue 17
        with pytest.raises((ImportError, AttributeError)):
            _resolve(name)
    assert _resolve("invert.train.distributed").__name__ == "invert.train.distributed"

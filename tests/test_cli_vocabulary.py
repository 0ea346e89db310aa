"""The command line as one tool: every subcommand's parser speaks the same vocabulary,
every option says what it does, and help never waits for torch."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from invert.cli import build_parser

REPO = Path(__file__).resolve().parents[1]

#: dest -> the one spelling every command uses for it
SHARED = {
    "layers": "--layers", "image_size": "--image-size", "quiet": "--quiet", "json": "--json",
    "csv": "--csv", "out": "--out", "device": "--device", "seed": "--seed",
    "weights": "--weights", "recipe": "--recipe", "cache_dir": "--cache-dir",
    "no_train": "--no-train", "random_seed": "--random-seed", "debug": "--debug",
}  # fmt: skip
#: older spellings, deleted before the first release: an argparse error now
OLD = {"--model", "--layer", "--size", "--input-size", "--crop-size", "--progress",
       "--all-layers", "--no-projection"}  # fmt: skip
#: commands that print no table (train prints one accuracy; figures writes a report)
NO_TABLE = {"train", "figures"}
#: commands that take no model (models lists the registry; figures trains its own five)
NO_MODEL = {"models", "figures"}


def _commands():
    parser = build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return group.choices


COMMANDS = _commands()


def test_the_commands_are_all_there():
    assert list(COMMANDS) == [
        "models", "info", "train", "evaluate", "reconstruct", "frame-bounds", "pooling",
        "pairing", "invariance", "correlations", "figures",
    ]  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help_and_the_shared_spelling(name):
    parser = COMMANDS[name]
    assert parser.description or parser.format_help()
    shown = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    for action in shown:
        label = action.option_strings or [action.dest]
        assert action.help and action.help.strip(), f"{name} {label[0]} has no help text"
        assert not set(action.option_strings) & OLD, f"{name} takes {action.option_strings}"
        if action.dest in SHARED and action.option_strings:
            assert action.option_strings == [SHARED[action.dest]], (name, action.option_strings)
        if action.dest == "out":
            assert action.metavar, f"{name} --out has no metavar saying what it writes"
    options = {s for a in shown for s in a.option_strings}
    assert "--quiet" in options, f"{name} has no --quiet"
    if name not in NO_TABLE:
        assert {"--json", "--csv"} <= options, f"{name} prints a table without --json/--csv"
    if name not in NO_MODEL:
        positional = [a for a in shown if not a.option_strings]
        assert positional and positional[0].dest == "spec", f"{name}: the model is not first"


def test_commands_that_write_a_file_say_which():
    for name in ("reconstruct", "pairing", "train", "evaluate", "figures"):
        (out,) = [a for a in COMMANDS[name]._actions if a.dest == "out"]
        assert len(out.help) > 30, f"{name} --out: {out.help!r}"


_HELP_SCRIPT = """
import contextlib, io, sys
from invert.cli import build_parser, main
commands = [[]] + [[name] for name in {commands!r}]
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*argv, "--help"])
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
    assert "usage: crelu" in out.getvalue(), argv
heavy = ("torch", "scipy", "skimage", "matplotlib", "safetensors")
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
"""


def test_help_does_not_import_torch():
    # a fresh interpreter: what `crelu --help` and `crelu COMMAND --help` import
    script = _HELP_SCRIPT.format(commands=list(COMMANDS))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"--help imported {done.stdout.strip()}"


def test_import_invert_and_theory_is_lazy_but_complete():
    script = (
        "import sys, invert, theory\n"
        "assert 'torch' not in sys.modules\n"
        "names = [getattr(invert, n) for n in invert.__all__]\n"
        "names += [getattr(theory, n) for n in theory.__all__]\n"
        "from invert import reconstruct, Net, load_model\n"
        "from theory import frame_bounds, pairing\n"
        "import invert.train\n"
        "assert invert.train.train.__module__ == 'invert.train.trainer'\n"
        "print(len(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(__import__("invert").__all__) + len(__import__("theory").__all__)


def test_the_thread_threshold_is_the_one_of_invert_device():
    from invert.cli.reconstruct import _SMALL
    from invert.device import SMALL_INPUT_PIXELS

    assert _SMALL == SMALL_INPUT_PIXELS


def test_progress_is_off_with_quiet_and_the_loader_hears_it(monkeypatch, capsys):
    from invert.cli import main
    from invert.nn.zoo import create_model

    calls = []

    def loader(spec, **options):
        calls.append(options)
        return create_model("convpool_c", width=0.125).eval()

    for extra in ([], ["--quiet"]):
        assert main(["correlations", "convpool_c@textures", *extra], load_model=loader) == 2
    capsys.readouterr()  # (convpool_c has no CReLU layer: an error, after the load)
    assert [c["progress"] for c in calls] == [True, False]


@pytest.mark.parametrize(
    "argv",
    [
        ["frame-bounds", "convpool_c", "--input-size", "8"],
        ["frame-bounds", "convpool_c", "--progress"],
        ["pooling", "convpool_c", "--layer", "conv3"],
        ["reconstruct", "--model", "convpool_c", "--image", "skimage:camera"],
        ["reconstruct", "convpool_c", "--image", "skimage:camera", "--all-layers"],
        ["reconstruct", "convpool_c", "--image", "skimage:camera", "--size", "32"],
        ["reconstruct", "convpool_c", "--image", "skimage:camera", "--no-projection"],
        ["evaluate", "x.safetensors", "--protocol", "tencrop", "--crop-size", "8"],
    ],
)
def test_the_old_spellings_are_gone(argv, capsys):
    from invert.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def _recording_loader(calls):
    from invert.nn.zoo import create_model

    def loader(spec, **options):
        calls.append(options)
        return create_model("convpool_c_crelu", width=0.125).eval()

    return loader


@pytest.mark.parametrize(
    "argv",
    [
        ["info", "convpool_c_crelu@textures"],
        ["frame-bounds", "convpool_c_crelu@textures", "--image-size", "8", "--layers", "conv1"],
        ["correlations", "convpool_c_crelu@textures", "--layers", "conv1"],
        ["pairing", "convpool_c_crelu@textures", "--layers", "conv1", "--trials", "1"],
    ],
)
def test_seed_picks_the_trained_model_on_every_command(argv, capsys):
    from invert.cli import main

    calls = []
    for extra in ([], ["--seed", "1"]):
        assert main([*argv, *extra, "--device", "cpu"], load_model=_recording_loader(calls)) == 0
    capsys.readouterr()
    assert [c.get("seed", 0) for c in calls] == [0, 1]


def test_seed_needs_a_model_at_data(capsys):
    from invert.cli import main

    status = main(["info", "convpool_c", "--seed", "1"], load_model=_recording_loader([]))
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("crelu info: error: --seed picks one training run")


def test_a_missing_cache_entry_names_the_command_line_option(capsys, tmp_path):
    from invert.cli import main

    argv = ["info", "convpool_c@textures", "--no-train", "--cache-dir", str(tmp_path)]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no cached model" in err and "leave out --no-train" in err
    assert "train_if_missing" not in err


def test_a_bug_is_one_line_that_says_so_and_debug_shows_it(monkeypatch, capsys):
    import dataclasses

    from invert.cli import main, models

    def broken(run):
        raise KeyError("conv1")

    (listing, info) = models.COMMANDS
    monkeypatch.setattr(models, "COMMANDS", (dataclasses.replace(listing, run=broken), info))
    assert main(["models"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("crelu models: internal error: KeyError: 'conv1'")
    assert "this is a bug in crelu-toolkit; rerun with --debug" in line
    for argv in (["--debug", "models"], ["models", "--debug"]):
        with pytest.raises(KeyError):
            main(argv)
    monkeypatch.setenv("CRELU_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["models"])

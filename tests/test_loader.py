"""The model loader: specs, cache hit and miss, versions, concurrency, errors."""

from __future__ import annotations

import multiprocessing
import os
import warnings

import pytest
import torch

import invert
import invert.train.loader as loader
import invert.version
from invert.data import TEXTURE_NAMES, ImageDataset, load_dataset
from invert.nn.zoo import create_model
from invert.train.checkpoints import read_metadata, save_checkpoint
from invert.train.loader import cache_path, check_compatible, default_cache_dir, load_model
from invert.train.recipe import get_recipe

SPEC = "convpool_c@textures"


@pytest.fixture
def counted(monkeypatch):
    """Count the trainings the loader starts."""
    calls = []
    real = loader.fit_spec

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "fit_spec", counting)
    return calls


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_cache_miss_trains_and_the_hit_loads(tmp_path, counted):
    first = load_model(SPEC, recipe="tiny", cache_dir=tmp_path, device="cpu", progress=False)
    assert counted == [f"{SPEC}"]
    entry = cache_path(SPEC, recipe="tiny", cache_dir=tmp_path)
    assert entry.is_file() and entry.parent == tmp_path
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [entry.name]
    assert not list(tmp_path.glob("*partial*")) and not list(tmp_path.glob(".*tmp"))
    assert not list(tmp_path.glob("*.lock"))  # the lock's holder removed it
    stamp = entry.stat().st_mtime_ns

    second = load_model(SPEC, recipe="tiny", cache_dir=tmp_path, device="cpu", progress=False)
    assert counted == [f"{SPEC}"]  # no second training
    assert entry.stat().st_mtime_ns == stamp
    assert _same_weights(first, second)
    for model in (first, second):
        assert not model.training
        assert model.metadata["classes"] == list(TEXTURE_NAMES)
        assert model.metadata["recipe"]["name"] == "tiny"
        assert model.config["num_classes"] == len(TEXTURE_NAMES)
        assert model.config["width"] == get_recipe("tiny").model.width
    # the normalization is the training set's per-channel mean and std
    train_set = load_dataset("textures", **get_recipe("tiny").data.options)
    pixels = train_set.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert second.normalize.mean.tolist() == pytest.approx(pixels.mean(1).tolist(), abs=1e-6)
    assert second.normalize.std.tolist() == pytest.approx(
        pixels.std(1, unbiased=False).tolist(), abs=1e-6
    )
    # the entry is a plain checkpoint: loading it by path gives the same model
    by_path = load_model(str(entry), device="cpu")
    assert _same_weights(first, by_path) and by_path.metadata == second.metadata


def test_missing_entry_without_training_is_an_error(tmp_path, counted):
    with pytest.raises(FileNotFoundError, match=r"no cached model .*crelu train"):
        load_model(SPEC, recipe="tiny", cache_dir=tmp_path, train_if_missing=False)
    assert counted == []


def test_entry_from_another_toolkit_version_is_retrained(tmp_path, counted, monkeypatch, capsys):
    current = invert.__version__
    monkeypatch.setattr(invert.version, "__version__", "0.0.1")
    old = load_model(SPEC, recipe="tiny", cache_dir=tmp_path, device="cpu", progress=False)
    assert old.metadata["toolkit_version"] == "0.0.1"
    monkeypatch.setattr(invert.version, "__version__", current)
    capsys.readouterr()
    new = load_model(SPEC, recipe="tiny", cache_dir=tmp_path, device="cpu", progress=False)
    assert len(counted) == 2
    assert "another toolkit version" in capsys.readouterr().err
    assert new.metadata["toolkit_version"] == invert.__version__
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # the old entry stays for its version
    assert _same_weights(old, new)  # same recipe and seed: the same training


def test_cache_location_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CRELU_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CRELU_CACHE")
    assert default_cache_dir() == tmp_path / "b" / "crelu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "crelu"

    monkeypatch.chdir(tmp_path)
    key = cache_path("vgg@cifar10:data/cifar", recipe="fast", cache_dir="c")
    assert key == cache_path(f"vgg@cifar10:{tmp_path}/data/cifar", recipe="fast", cache_dir="c")
    assert key.name.endswith(f"-v{invert.__version__}.safetensors")
    others = {
        cache_path("vgg@cifar10:data/cifar", recipe="tiny", cache_dir="c"),
        cache_path("vgg@cifar10:data/other", recipe="fast", cache_dir="c"),
        cache_path("vgg_crelu1@cifar10:data/cifar", recipe="fast", cache_dir="c"),
        cache_path("vgg@cifar10:data/cifar", recipe="fast", cache_dir="c", seed=1),
        cache_path(
            "vgg@cifar10:data/cifar", recipe=get_recipe("fast").replace(lr=0.2), cache_dir="c"
        ),
    }
    assert key not in others and len(others) == 5


def test_unwritable_cache_directory_is_a_one_line_error(tmp_path, counted):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError) as excinfo:
        load_model(SPEC, recipe="tiny", cache_dir=blocker / "cache", progress=False)
    message = str(excinfo.value)
    assert "\n" not in message and str(blocker / "cache") in message and "CRELU_CACHE" in message
    assert counted == []


def _concurrent_request(cache, result, marker_dir):
    """One of two processes asking for the same model at the same time."""
    torch.set_num_threads(1)
    real = loader.fit_spec

    def marking(*args, **kwargs):
        (marker_dir / f"trained-{os.getpid()}").touch()
        return real(*args, **kwargs)

    loader.fit_spec = marking
    model = load_model(SPEC, recipe="tiny", cache_dir=cache, device="cpu", progress=False)
    torch.save(model.state_dict(), result)
    os._exit(0)


def test_two_concurrent_requests_train_once_and_agree(tmp_path):
    fork = multiprocessing.get_context("fork")
    cache = tmp_path / "cache"
    runs = [
        fork.Process(target=_concurrent_request, args=(cache, tmp_path / f"{i}.pt", tmp_path))
        for i in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=300)
    assert [run.exitcode for run in runs] == [0, 0]
    assert len(list(tmp_path.glob("trained-*"))) == 1  # the other waited and loaded
    entries = list(cache.glob("*.safetensors"))
    assert len(entries) == 1 and not list(cache.glob("*partial*"))
    assert not list(cache.glob("*.lock"))
    assert read_metadata(entries[0])["epochs"] == get_recipe("tiny").epochs
    a = torch.load(tmp_path / "0.pt", weights_only=True)
    b = torch.load(tmp_path / "1.pt", weights_only=True)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_removed_lock_file_is_locked_afresh_by_the_waiter(tmp_path):
    import threading

    path = tmp_path / "entry.lock"
    first = loader._lock(path)
    got = {}

    def wait_for_it():
        handle = loader._lock(path)  # blocks until the first holder is done
        got["inode"] = os.fstat(handle.fileno()).st_ino
        got["current"] = os.stat(path).st_ino
        loader._unlock(handle, path)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # still waiting: the lock is held
    loader._unlock(first, path)  # removes the file, then releases
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    # the waiter holds the lock of the file now at the path, not of the removed one
    assert got["inode"] == got["current"]
    assert not path.exists()


def test_registry_name_gives_an_untrained_model_with_a_warning():
    with pytest.warns(UserWarning, match="random weights"):
        model = load_model("convpool_c_crelu_half", device="cpu")
    assert not model.training and model.metadata["trained"] is False
    assert model.metadata["arch"] == "convpool_c_crelu_half"
    assert next(model.parameters()).device.type == "cpu"


def test_checkpoint_paths_and_bad_specs(tmp_path):
    net = create_model("convpool_c_avr", width=0.125)
    path = save_checkpoint(net, tmp_path / "net.safetensors", data="textures")
    for spec in (str(path), path):
        loaded = load_model(spec, device="cpu")
        assert _same_weights(net, loaded) and loaded.metadata["data"] == "textures"
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model("nope@textures")
    with pytest.raises(ValueError, match="valid model names: convpool_c"):
        load_model("nope")
    with pytest.raises(ValueError, match="unknown recipe"):
        load_model(SPEC, recipe="slow", cache_dir=tmp_path)
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    with pytest.raises(ValueError, match="plain weights.*--weights"):
        load_model(str(plain))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(str(path), device="cpu")  # a checkpoint is not an untrained model


def test_check_compatible():
    data = ImageDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), [0, 1], ["a", "b"])
    check_compatible(create_model("convpool_c", num_classes=2, width=0.125), data)
    with pytest.raises(ValueError, match="10 classes but the data set"):
        check_compatible(create_model("convpool_c", num_classes=10, width=0.125), data)
    grey = create_model("convpool_c", num_classes=2, width=0.125, in_channels=1)
    with pytest.raises(ValueError, match="1-channel images"):
        check_compatible(grey, data)


# --- weights= and FILE.py:FUNCTION (issue 18) ---------------------------------------------


def _resnet18_file(path, *, classes=10, prefix="", width=0.0625, seed=0):
    """A fine-tuned-style resnet18 state dict (small width), as a user would save it."""
    from invert.nn.reference import resnet18

    torch.manual_seed(seed)
    model = resnet18(num_classes=classes, width=width)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    return model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_for_a_fine_tuned_resnet18(tmp_path, suffix):
    path = tmp_path / f"r18{suffix}"
    source = _resnet18_file(path, classes=10, prefix="module.")
    with pytest.warns(UserWarning, match=r"removed the prefix 'module\.' \(DataParallel"):
        model = load_model("resnet18", weights=path, device="cpu")
    assert model.fc.weight.shape == (10, 32) and model.config["num_classes"] == 10
    assert model.config["width"] == 0.0625  # read from the file, as the class count
    assert _same_weights(source, model) and not model.training
    assert model.metadata["arch"] == "resnet18" and model.metadata["weights"] == str(path)
    mean = torch.tensor([0.485, 0.456, 0.406])
    assert torch.allclose(torch.tensor(model.metadata["normalization"]["mean"]), mean)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), source.eval()(x))


def test_weights_of_another_architecture_are_named(tmp_path):
    from invert.nn.reference import resnet50, vgg11_bn

    path = tmp_path / "r50.pth"
    torch.save(resnet50(width=0.0625, num_classes=4).state_dict(), path)
    with pytest.raises(ValueError) as excinfo:
        load_model("resnet18", weights=path, device="cpu")
    message = str(excinfo.value)
    assert "\n" not in message
    assert "holds resnet50 weights (its keys match resnet50), not resnet18" in message
    torch.save(vgg11_bn(width=0.0625).state_dict(), path)
    with pytest.raises(ValueError, match="holds vgg11_bn weights .* not vgg11;"):
        load_model("vgg11", weights=path, device="cpu")
    # zoo variants share keys; the shapes pick the variants (CReLU doubles the next
    # conv's input): convpool_c_crelu at width 0.25 is convpool_c_crelu_half at width 0.5
    torch.save(create_model("convpool_c_crelu", width=0.25).state_dict(), path)
    with pytest.raises(ValueError) as excinfo:
        load_model("allcnn_b", weights=path, device="cpu")
    assert "holds convpool_c_crelu or convpool_c_crelu_half weights (its keys match " in str(
        excinfo.value
    )
    # a plain file given as a checkpoint: the error names the architecture to use
    torch.save(_resnet18_file(tmp_path / "x.pth").state_dict(), path)
    with pytest.raises(ValueError, match="`crelu COMMAND resnet18 --weights"):
        load_model(str(path), device="cpu")


FACTORY = """
import torch
from torch import nn


class Mine(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(x.mean((2, 3)))


def make_net():
    return Mine()


def broken():
    raise RuntimeError("no GPU here")


def not_a_model():
    return 42
"""


def test_factory_spec_with_and_without_weights(tmp_path):
    file = tmp_path / "mine.py"
    file.write_text(FACTORY)
    model = load_model(f"{file}:make_net", device="cpu")
    assert type(model).__name__ == "Mine" and not model.training
    assert model.metadata["arch"] == f"{file}:make_net"
    weights = tmp_path / "mine.pth"
    torch.manual_seed(5)
    trained = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    torch.save(trained, weights)
    model = load_model(f"{file}:make_net", weights=weights, device="cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert model.metadata["trained"] is True


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("{tmp}/absent.py:make_net", ValueError, "no such file: {tmp}/absent.py"),
        ("{tmp}/mine.py:nothing", ValueError, "mine.py has no function nothing; its functions: "
         "Mine, broken, make_net, not_a_model"),
        ("{tmp}/mine.py:broken", ValueError, "broken() in {tmp}/mine.py raised RuntimeError: "
         "no GPU here"),
        ("{tmp}/mine.py:not_a_model", TypeError, "not_a_model() in {tmp}/mine.py returned int, "
         "not a torch.nn.Module"),
        ("{tmp}/bad.py:make_net", ValueError, "importing {tmp}/bad.py raised ZeroDivisionError"),
    ],
)  # fmt: skip
def test_factory_spec_errors_are_one_line(tmp_path, spec, error, message):
    (tmp_path / "mine.py").write_text(FACTORY)
    (tmp_path / "bad.py").write_text("x = 1 / 0\n")
    with pytest.raises(error) as excinfo:
        load_model(spec.format(tmp=tmp_path), device="cpu")
    assert message.format(tmp=tmp_path) in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "name, width, classes", [("allcnn_b_crelu_all", 0.05, 6), ("alexnet", 0.03, 3)]
)
def test_weights_at_a_rounded_width_and_class_count_load(tmp_path, name, width, classes):
    # filter counts are rounded (48 * 0.05 -> 2): the first conv alone misjudges the width
    source = create_model(name, width=width, num_classes=classes)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = load_model(name, weights=path, device="cpu")
    assert _same_weights(source, model) and model.config["num_classes"] == classes
    assert loader.matching_architectures(source.state_dict()) == [name]

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
    real = loader.train_from_spec

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "train_from_spec", counting)
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
    real = loader.train_from_spec

    def marking(*args, **kwargs):
        (marker_dir / f"trained-{os.getpid()}").touch()
        return real(*args, **kwargs)

    loader.train_from_spec = marking
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

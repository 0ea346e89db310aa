"""Checkpoints and training state: exact round trips, plain state dicts, hostile files."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from invert.files import atomic_write_bytes
from invert.nn.reference import resnet18
from invert.nn.zoo import create_model
from invert.train.checkpoints import (
    check_precision,
    load_checkpoint,
    load_state_dict_into,
    load_training_state,
    read_metadata,
    read_state_dict,
    save_checkpoint,
    save_training_state,
)
from invert.version import __version__


def _randomize(model):
    """Non-default values everywhere, BatchNorm buffers included."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
                if tensor.ndim == 1:
                    tensor.abs_()  # running_var must stay positive
            else:
                tensor.fill_(7)
    return model


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


def _one_line_error(excinfo):
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("convpool_c_crelu", dict(width=0.25)),
        ("vgg_crelu13", dict(width=0.125, num_classes=100, dropout=0.1)),
        ("alexnet", dict(width=0.0625, in_channels=1)),
        ("resnet18", dict(width=0.0625, num_classes=7)),
    ],
)
def test_round_trip_is_bit_identical(tmp_path, name, kwargs):
    model = _randomize(create_model(name, **kwargs))
    channels = model.config["in_channels"]
    mean, std = [0.1 * (c + 1) for c in range(channels)], [0.2 + 0.1 * c for c in range(channels)]
    model.normalize.set_statistics(mean, std)
    history = [{"epoch": 1, "train_loss": 1.25, "test_accuracy": 0.5}]
    classes = [f"class {i}" for i in range(model.config["num_classes"])]
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(model, path, data="textures", classes=classes, history=history, seed=3)

    loaded = load_checkpoint(path, device="cpu")
    _assert_same_weights(model, loaded)
    assert not loaded.training
    assert loaded.arch == name and loaded.config == model.config
    # float32 statistics survive the JSON round trip exactly
    assert torch.equal(loaded.normalize.mean, model.normalize.mean)
    assert torch.equal(loaded.normalize.std, model.normalize.std)
    meta = loaded.metadata
    assert meta["arch"] == name and meta["config"] == model.config
    assert meta["data"] == "textures" and meta["classes"] == classes
    assert meta["history"] == history and meta["seed"] == 3
    assert meta["toolkit_version"] == __version__
    assert read_metadata(path) == meta
    # same outputs on the same input
    model.eval()
    x = torch.rand(2, channels, 32 if name != "alexnet" else 64, 32 if name != "alexnet" else 64)
    assert torch.equal(model(x), loaded(x))


def test_header_length_is_not_mistaken_for_a_pickle(tmp_path):
    # a safetensors file starts with its header length; 0x80 there is also the first
    # byte of a pickle, which must not confuse the format detection
    model = create_model("convpool_c", width=0.125)
    path = tmp_path / "model.safetensors"
    for pad in range(256):
        save_checkpoint(model, path, pad="x" * pad)
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path, device="cpu").metadata["pad"] == "x" * pad
    assert read_metadata(path)["pad"] == "x" * pad


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    model = create_model("convpool_c", width=0.125)
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, note="first")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        save_checkpoint(_randomize(create_model("convpool_c", width=0.125)), path, note="second")
    monkeypatch.undo()
    assert read_metadata(path)["note"] == "first"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_metadata_is_validated(tmp_path):
    model = create_model("convpool_c", width=0.125)
    with pytest.raises(TypeError, match="arch"):
        save_checkpoint(model, tmp_path / "a.safetensors", arch="other")
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(model, tmp_path / "a.safetensors", data=object())
    with pytest.raises(TypeError, match="finite"):
        save_checkpoint(model, tmp_path / "a.safetensors", loss=float("nan"))
    assert not (tmp_path / "a.safetensors").exists()


# --- plain state dicts ------------------------------------------------------------------


def test_plain_state_dict_files_load(tmp_path):
    source = _randomize(create_model("vgg", width=0.125))
    state = source.state_dict()
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, bare)
    for path in (plain, wrapped, bare):
        target = create_model("vgg", width=0.125)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert load_state_dict_into(target, path) is target
        # the DataParallel prefix is removed, and said so
        assert [str(w.message)[:30] for w in caught] == (
            ["removed the prefix 'module.' ("] if path == wrapped else []
        )
        _assert_same_weights(source, target)
    target = create_model("vgg", width=0.125)
    load_state_dict_into(target, state)  # a mapping works too
    _assert_same_weights(source, target)
    # a checkpoint's weights load into a model too
    save_checkpoint(source, tmp_path / "ours.safetensors")
    target = load_state_dict_into(create_model("vgg", width=0.125), tmp_path / "ours.safetensors")
    _assert_same_weights(source, target)
    # but a plain file is not a checkpoint: the error says what to use instead
    for path in (plain, bare):
        with pytest.raises(ValueError, match="load_state_dict_into") as excinfo:
            load_checkpoint(path, device="cpu")
        _one_line_error(excinfo)


def test_key_mismatch_names_missing_and_unexpected_keys(tmp_path):
    model = create_model("convpool_c", width=0.125)
    state = dict(model.state_dict())
    del state["conv3.conv.bias"]
    state["conv3.conv.offset"] = torch.zeros(3)
    with pytest.raises(ValueError) as excinfo:
        load_state_dict_into(create_model("convpool_c", width=0.125), state)
    message = _one_line_error(excinfo)
    assert "missing keys conv3.conv.bias" in message
    assert "unexpected keys conv3.conv.offset" in message
    # many missing keys: a few are named, then a count
    path = tmp_path / "vgg.pt"
    torch.save(model.state_dict(), path)
    target = create_model("vgg", width=0.125)
    with pytest.raises(ValueError) as excinfo:
        load_state_dict_into(target, path)
    message = _one_line_error(excinfo)
    missing = [k for k in target.state_dict() if k not in model.state_dict()]
    assert missing[0] in message and f"and {len(missing) - 5} more" in message
    # non-strict loading skips the keys but still loads the rest
    partial = {"conv1.conv.weight": torch.ones_like(model.conv1.conv.weight)}
    loaded = load_state_dict_into(create_model("convpool_c", width=0.125), partial, strict=False)
    assert torch.equal(loaded.conv1.conv.weight, partial["conv1.conv.weight"])


def test_shape_mismatch_names_the_layer():
    state = create_model("convpool_c", width=0.25).state_dict()
    with pytest.raises(ValueError, match=r"layer conv1\.conv .*\(24, 3, 3, 3\).*\(12, 3, 3, 3\)"):
        load_state_dict_into(create_model("convpool_c", width=0.125), state)


def test_non_finite_weights_are_refused(tmp_path):
    model = create_model("convpool_c", width=0.125)
    with torch.no_grad():
        model.conv2.conv.weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="non-finite.*conv2.conv.weight"):
        load_checkpoint(tmp_path / "nan.safetensors", device="cpu")


# --- damaged and hostile files ----------------------------------------------------------


def test_corrupt_and_truncated_files_give_one_line_errors(tmp_path):
    model = create_model("convpool_c", width=0.125)
    good = tmp_path / "good.safetensors"
    save_checkpoint(model, good)
    data = good.read_bytes()
    header = int.from_bytes(data[:8], "little")
    cases = {
        "empty": b"",
        "tiny": data[:5],
        "in_header": data[: 8 + header // 2],
        "in_tensors": data[: (8 + header + len(data)) // 2],
        "last_byte": data[:-1],
        "garbage": os.urandom(4000),
        "bad_header": data[:8] + b"{" + b"x" * (header - 1) + data[8 + header :],
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        for reader in (
            lambda p: load_checkpoint(p, device="cpu"),
            read_metadata,
            read_state_dict,
        ):
            with pytest.raises(ValueError) as excinfo:
                reader(path)
            assert str(path) in _one_line_error(excinfo), name
    # truncated PyTorch files
    pt = tmp_path / "state.pt"
    torch.save(model.state_dict(), pt)
    blob = pt.read_bytes()
    for cut in (10, len(blob) // 2, len(blob) - 1):
        pt.write_bytes(blob[:cut])
        with pytest.raises(ValueError) as excinfo:
            read_state_dict(pt)
        _one_line_error(excinfo)
        with pytest.raises(ValueError) as excinfo:
            load_training_state(pt)
        _one_line_error(excinfo)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(ValueError, match="not a file"):
        read_state_dict(tmp_path)


class _SideEffect:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"conv1.conv.weight": torch.zeros(1), "evil": _SideEffect(marker)}
    zip_file = tmp_path / "evil.pt"
    torch.save(payload, zip_file)
    legacy = tmp_path / "evil.pkl"
    with open(legacy, "wb") as file:
        pickle.dump(payload, file, protocol=2)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(zip_file.read_bytes())
    # sanity: an ordinary unpickler would run it
    assert not marker.exists()
    for path in (zip_file, legacy, disguised):
        for reader in (
            read_state_dict,
            load_training_state,
            lambda p: load_state_dict_into(create_model("convpool_c", width=0.125), p),
        ):
            with pytest.raises(ValueError) as excinfo:
                reader(path)
            _one_line_error(excinfo)
        with pytest.raises(ValueError):
            load_checkpoint(path, device="cpu")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_SideEffect(marker)))  # the payload is real
    assert marker.exists()


def test_newer_format_is_refused(tmp_path):
    model = create_model("convpool_c", width=0.125)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "crelu-checkpoint",
        "format_version": 99,
        "arch": "convpool_c",
        "config": model.config,
    }
    save_file(state, tmp_path / "future.safetensors", metadata={"crelu": json.dumps(meta)})
    with pytest.raises(ValueError, match="newer"):
        load_checkpoint(tmp_path / "future.safetensors", device="cpu")


# --- training state ---------------------------------------------------------------------


def test_training_state_round_trip(tmp_path):
    model = create_model("convpool_c", width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    state = {
        "epoch": 4,
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(5)), None)},
        "history": [{"epoch": 1, "loss": 0.5}],
        "name": "x",
    }
    path = tmp_path / "run.state.pt"
    save_training_state(state, path)
    again = load_training_state(path)
    assert again["epoch"] == 4 and again["history"] == state["history"] and again["name"] == "x"
    assert torch.equal(again["rng"]["torch"], state["rng"]["torch"])
    assert again["rng"]["python"] == state["rng"]["python"]
    restored = torch.optim.SGD(model.parameters(), lr=0.5)
    restored.load_state_dict(again["optimizer"])
    for p in model.parameters():
        assert torch.equal(
            restored.state[p]["momentum_buffer"], optimizer.state[p]["momentum_buffer"]
        )
    assert restored.param_groups[0]["lr"] == 0.1


def test_atomic_write_reports_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with permissions that ignore mode bits")
        with pytest.raises(PermissionError, match="locked"):
            atomic_write_bytes(locked / "x.bin", b"1")
    finally:
        locked.chmod(0o700)


# --- weights as users save them (issue 18) ------------------------------------------------


@pytest.mark.parametrize(
    "prefix, wrapper", [("module.", "DataParallel"), ("_orig_mod.", "torch.compile")]
)
def test_wrapper_prefixes_are_removed_with_a_warning(tmp_path, prefix, wrapper):
    model = _randomize(resnet18(width=0.0625, num_classes=3))
    path = tmp_path / "wrapped.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    with pytest.warns(UserWarning, match=rf"removed the prefix '{prefix}' \({'.*' + wrapper}"):
        state = read_state_dict(path)
    assert list(state) == list(model.state_dict())
    fresh = resnet18(width=0.0625, num_classes=3)
    with pytest.warns(UserWarning, match="removed the prefix"):
        load_state_dict_into(fresh, path)
    _assert_same_weights(model, fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no prefix, no warning
        load_state_dict_into(fresh, model.state_dict())


@pytest.mark.parametrize("how", ["zip", "legacy", "in a dict"])
def test_a_pickled_model_is_refused_with_advice(tmp_path, how):
    path, model = tmp_path / "whole.pt", resnet18(width=0.0625)
    if how == "legacy":
        torch.save(model, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(model if how == "zip" else {"epoch": 3, "model": model}, path)
    with pytest.raises(ValueError) as excinfo:
        read_state_dict(path)
    message = _one_line_error(excinfo)
    assert "holds a pickled model object (invert.nn.reference.ResNet)" in message
    assert "save model.state_dict()" in message
    # the state dict itself loads, in either format
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=how != "legacy")
    assert list(read_state_dict(path)) == list(model.state_dict())
    # a pickled non-module object keeps the generic weights-only refusal
    odd = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(2), "when": __import__("datetime").date(2020, 1, 1)}, odd)
    with pytest.raises(ValueError, match="refusing to load") as excinfo:
        read_state_dict(odd)
    assert "pickled model" not in str(excinfo.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_refused(tmp_path, dtype):
    model = resnet18(width=0.0625, num_classes=3)
    path = tmp_path / "half.pth"
    torch.save({k: v.to(dtype) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, path)  # fmt: skip
    with pytest.raises(ValueError) as excinfo:
        load_state_dict_into(model, path)
    message = _one_line_error(excinfo)
    assert f"holds {dtype} weights (conv1.weight, bn1.weight" in message
    assert "convert them with .float()" in message
    check_precision(model.state_dict(), "fine")  # float32 passes

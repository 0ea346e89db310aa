"""Tests of invert.data: embedded textures, CIFAR readers, image folders, statistics, augmentation.

Every data file is written here, in the official format, under ``tmp_path``; references
are computed with plain numpy indexing, independently of the code under test.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch
from skimage import io as skio

from invert.data import (
    ImageDataset,
    augment,
    channel_statistics,
    load_dataset,
    statistics,
    texture_sources,
    textures,
)

EXPECTED_TEXTURES = [
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
]


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------------------


def test_textures_defaults_classes_and_counts():
    train = load_dataset("textures")
    test = load_dataset("textures", split="val")  # "val" is the alias of "test"
    assert train.classes == EXPECTED_TEXTURES and test.classes == EXPECTED_TEXTURES
    assert (train.spec, train.split, test.split) == ("textures", "train", "test")
    assert train.images.shape == (500 * 13, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (100 * 13, 3, 32, 32)
    assert torch.equal(torch.bincount(train.labels), torch.full((13,), 500))
    assert torch.equal(torch.bincount(test.labels), torch.full((13,), 100))
    image, label = train[-1]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and label == 12
    assert torch.equal(image, train.images[-1].double().div(255).float())
    # Crops of one class are distinct (positions drawn without replacement).
    assert len(torch.unique(train.images.flatten(1), dim=0)) == len(train)


def test_textures_deterministic_by_seed():
    options = dict(train_per_class=30, test_per_class=10)
    a = load_dataset("textures", seed=3, **options)
    b = load_dataset("textures", seed=3, **options)
    c = load_dataset("textures", seed=4, **options)
    assert torch.equal(a.images, b.images) and torch.equal(a.crop_boxes, b.crop_boxes)
    assert not torch.equal(a.images, c.images)
    # The train stream does not depend on the test count.
    d = load_dataset("textures", seed=3, train_per_class=30, test_per_class=50)
    assert torch.equal(a.images, d.images)


def test_textures_train_and_test_regions_disjoint():
    sources = texture_sources()
    train = load_dataset("textures", train_per_class=200, test_per_class=100)
    test = load_dataset("textures", split="test", train_per_class=200, test_per_class=100)
    for label, name in enumerate(train.classes):
        height, width = sources[name].shape[:2]
        masks = []
        for ds in (train, test):
            mask = np.zeros((height, width), dtype=bool)
            for top, left, bottom, right in ds.crop_boxes[ds.labels == label].tolist():
                assert 0 <= top < bottom <= height and 0 <= left < right <= width
                mask[top:bottom, left:right] = True
            masks.append(mask)
        assert not (masks[0] & masks[1]).any(), name
        assert masks[0].any() and masks[1].any()


def _fake_sources(monkeypatch, shapes, seed=0):
    rng = np.random.default_rng(seed)
    sources = {
        f"img{i}": rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        for i, shape in enumerate(shapes)
    }
    monkeypatch.setattr(textures, "_source_images", lambda: sources)
    return sources


def test_textures_crop_boxes_are_the_crops_pixels(monkeypatch):
    # context * image_size equals the shorter side: no resizing, so each crop must equal
    # the source pixels inside its box, exactly.
    sources = _fake_sources(monkeypatch, [(48, 70), (90, 48)])
    for split in ("train", "test"):
        ds = load_dataset(
            "textures", split=split, image_size=8, context=6, train_per_class=40, test_per_class=9
        )
        assert ds.classes == ["img0", "img1"]
        for image, label, box in zip(ds.images, ds.labels, ds.crop_boxes.tolist()):
            top, left, bottom, right = box
            assert (bottom - top, right - left) == (8, 8)
            source = sources[ds.classes[label]][top:bottom, left:right]
            assert np.array_equal(image.numpy(), source.transpose(2, 0, 1))


def test_textures_no_information_flows_between_regions(monkeypatch):
    # Resized sources: repaint the pixels one split's crops depict and check the other
    # split's crops are unchanged byte for byte (no leak through the resize filter).
    sources = _fake_sources(monkeypatch, [(60, 80), (90, 64)])
    options = dict(image_size=8, context=4.0, train_per_class=60, test_per_class=15)
    before = {s: load_dataset("textures", split=s, **options) for s in ("train", "test")}
    rng = np.random.default_rng(1)
    for painted, other in (("test", "train"), ("train", "test")):
        ds = before[painted]
        for label, name in enumerate(ds.classes):
            image = sources[name].copy()
            for top, left, bottom, right in ds.crop_boxes[ds.labels == label].tolist():
                box = image[top:bottom, left:right]
                box[...] = rng.integers(0, 256, size=box.shape, dtype=np.uint8)
            sources[name] = image
        after = {s: load_dataset("textures", split=s, **options) for s in ("train", "test")}
        assert torch.equal(after[other].images, before[other].images)
        changed = (after[painted].images != before[painted].images).flatten(1).any(1)
        assert changed.all()  # the boxes do cover what the crops show
        before = after


def test_textures_rejects_impossible_requests(monkeypatch):
    with pytest.raises(ValueError, match="distinct"):
        load_dataset("textures", train_per_class=10**6)
    with pytest.raises(TypeError, match="train_per_class"):
        load_dataset("textures", per_class=3)
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("textures", test_fraction=1.5)


def test_texture_sources_are_float_rgb_copies():
    sources = texture_sources()
    assert list(sources) == EXPECTED_TEXTURES
    for image in sources.values():
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert image.min() >= 0 and image.max() <= 1
    grey = sources["camera"]
    assert np.array_equal(grey[..., 0], grey[..., 2])
    sources["camera"][:] = 0
    assert texture_sources()["camera"].max() > 0


# --------------------------------------------------------------------------------------
# CIFAR, binary format
# --------------------------------------------------------------------------------------


def _records(rng, n, label_bytes, classes):
    labels = rng.integers(0, classes, size=(n, label_bytes), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1)


def _check_layout(ds, records, label_bytes):
    """Pixel (c, y, x) of record i is byte label_bytes + 1024 c + 32 y + x."""
    assert ds.images.shape == (len(records), 3, 32, 32)
    for i, record in enumerate(records):
        for c, y, x in [(0, 0, 0), (0, 0, 31), (1, 5, 7), (2, 31, 0), (2, 31, 31), (1, 17, 3)]:
            assert ds.images[i, c, y, x] == record[label_bytes + 1024 * c + 32 * y + x]
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    offsets = label_bytes + 1024 * c + 32 * y + x
    expected = np.stack([record[offsets] for record in records])
    assert np.array_equal(ds.images.numpy(), expected)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR10_NAMES += ["dog", "frog", "horse", "ship", "truck"]


def _write_cifar10_binary(root, rng, per_batch=3, test_n=4):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    batches = [_records(rng, per_batch, 1, 10) for _ in range(5)]
    for i, batch in enumerate(batches, 1):
        (folder / f"data_batch_{i}.bin").write_bytes(batch.tobytes())
    test = _records(rng, test_n, 1, 10)
    (folder / "test_batch.bin").write_bytes(test.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return folder, np.concatenate(batches), test


def test_cifar10_binary(tmp_path):
    folder, train_records, test_records = _write_cifar10_binary(tmp_path, np.random.default_rng(0))
    for path in (tmp_path, folder):  # the parent or the extracted folder
        train = load_dataset(f"cifar10:{path}")
        assert train.classes == CIFAR10_NAMES and len(train) == 15
        _check_layout(train, train_records, 1)
        assert train.labels.tolist() == train_records[:, 0].tolist()
    test = load_dataset(f"cifar10:{tmp_path}", split="test")
    _check_layout(test, test_records, 1)
    assert test.labels.tolist() == test_records[:, 0].tolist()
    image, label = test[2]
    assert torch.equal(image * 255, test.images[2].float()) and label == test_records[2, 0]


def test_cifar100_binary_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, test = _records(rng, 6, 2, 20), _records(rng, 3, 2, 20)
    train[:, 1] = [0, 99, 42, 7, 7, 63]  # fine labels; byte 0 is the coarse label
    (folder / "train.bin").write_bytes(train.tobytes())
    (folder / "test.bin").write_bytes(test.tobytes())
    names = [f"fine{i}" for i in range(100)]
    (folder / "fine_label_names.txt").write_text("\n".join(names) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"c{i}" for i in range(20)))
    ds = load_dataset(f"cifar100:{tmp_path}")
    assert ds.classes == names
    assert ds.labels.tolist() == [0, 99, 42, 7, 7, 63]
    _check_layout(ds, train, 2)
    _check_layout(load_dataset(f"cifar100:{folder}", split="test"), test, 2)


def test_cifar_binary_truncated_and_corrupt(tmp_path):
    folder, _, _ = _write_cifar10_binary(tmp_path, np.random.default_rng(2))
    batch = folder / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(ValueError, match="data_batch_3.bin") as excinfo:
        load_dataset(f"cifar10:{tmp_path}")
    assert "3073" in _one_line(excinfo)
    batch.write_bytes(b"")
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        load_dataset(f"cifar10:{tmp_path}")
    # Labels beyond the class count mean this is not a CIFAR-10 file.
    (folder / "test_batch.bin").write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match="test_batch.bin"):
        load_dataset(f"cifar10:{tmp_path}", split="test")
    (folder / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        load_dataset(f"cifar10:{tmp_path}", split="test")
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="batches.meta.txt"):
        load_dataset(f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------------------
# CIFAR, Python pickle format
# --------------------------------------------------------------------------------------


def _py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2 + numpy 1.x wrote the official CIFAR files.

    Python 3 cannot produce these (it pickles bytes through ``_codecs.encode``):
    strings are py2 ``str`` (SHORT_BINSTRING / BINSTRING) and arrays go through
    ``numpy.core.multiarray._reconstruct``.
    """

    def string(s):
        s = s.encode("latin1") if isinstance(s, str) else s
        if len(s) < 256:
            return b"U" + bytes([len(s)]) + s
        return b"T" + struct.pack("<i", len(s)) + s

    def integer(i):
        return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)

    def dump(o):
        if isinstance(o, str | bytes):
            return string(o)
        if isinstance(o, bool):
            return b"\x88" if o else b"\x89"
        if isinstance(o, int):
            return integer(o)
        if o is None:
            return b"N"
        if isinstance(o, list):
            return b"](" + b"".join(dump(v) for v in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(dump(k) + dump(v) for k, v in o.items()) + b"u"
        if isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            dtype = b"cnumpy\ndtype\n" + string("u1") + b"K\x00K\x01\x87R"
            dtype += b"(K\x03" + string("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            shape = b"(" + b"".join(integer(n) for n in o.shape) + b"t"
            return (
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
                + string("b")
                + b"\x87R(K\x01"
                + shape
                + dtype
                + b"\x89"
                + string(o.tobytes())
                + b"tb"
            )
        raise TypeError(type(o))

    return b"\x80\x02" + dump(obj) + b"."


def _write_cifar_pickles(root, rng, *, fine, writer):
    """Write a tiny cifar-10-batches-py / cifar-100-python folder; return the batches."""
    folder = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    classes = 100 if fine else 10
    names = ["train", "test"] if fine else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name in names:
        n = 4 if name.startswith("test") else 3
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, size=n)]
        batch = {b"batch_label": name.encode(), b"data": pixels}
        batch[b"filenames"] = [f"img_{i}.png".encode() for i in range(n)]
        if fine:
            batch[b"fine_labels"] = labels
            batch[b"coarse_labels"] = [v // 5 for v in labels]
        else:
            batch[b"labels"] = labels
        batches[name] = batch
        (folder / name).write_bytes(writer(batch))
    if fine:
        meta = {
            b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
        }
        (folder / "meta").write_bytes(writer(meta))
    else:
        meta = {
            b"num_cases_per_batch": 10000,
            b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_vis": 3072,
        }
        (folder / "batches.meta").write_bytes(writer(meta))
    return folder, batches


def _pickled(protocol):
    return lambda obj: pickle.dumps(obj, protocol=protocol)


WRITERS = {"py2": _py2_pickle, "protocol4": _pickled(4), "protocol5": _pickled(5)}


def _pixel_rows(images):
    """Inverse of the documented layout: row i = channel planes of 32 rows of 32."""
    n = len(images)
    out = np.empty((n, 3072), dtype=np.uint8)
    for c in range(3):
        for y in range(32):
            out[:, 1024 * c + 32 * y : 1024 * c + 32 * y + 32] = images[:, c, y, :]
    return out


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("fine", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, writer, fine):
    folder, batches = _write_cifar_pickles(
        tmp_path, np.random.default_rng(3), fine=fine, writer=WRITERS[writer]
    )
    spec = "cifar100" if fine else "cifar10"
    key = b"fine_labels" if fine else b"labels"
    train_names = ["train"] if fine else [f"data_batch_{i}" for i in range(1, 6)]
    for path in (tmp_path, folder):
        ds = load_dataset(f"{spec}:{path}")
        assert ds.classes == ([f"fine_{i}" for i in range(100)] if fine else CIFAR10_NAMES)
        expected = np.concatenate([batches[n][b"data"] for n in train_names])
        assert np.array_equal(_pixel_rows(ds.images.numpy()), expected)
        assert ds.images[0, 1, 5, 7] == expected[0, 1024 + 5 * 32 + 7]
        assert ds.labels.tolist() == sum((batches[n][key] for n in train_names), [])
    test = load_dataset(f"{spec}:{tmp_path}", split="test")
    test_batch = batches["test" if fine else "test_batch"]
    assert np.array_equal(_pixel_rows(test.images.numpy()), test_batch[b"data"])
    assert test.labels.tolist() == test_batch[key]


def test_binary_preferred_when_both_formats_present(tmp_path):
    rng = np.random.default_rng(4)
    _, train_records, _ = _write_cifar10_binary(tmp_path, rng)
    _write_cifar_pickles(tmp_path, rng, fine=False, writer=_pickled(4))
    ds = load_dataset(f"cifar10:{tmp_path}")
    _check_layout(ds, train_records, 1)


class _RunsShell:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


class _RunsExec:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.path)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsExec], ids=["os.system", "builtins.exec"])
@pytest.mark.parametrize("target", ["data_batch_1", "batches.meta"])
def test_malicious_pickle_is_refused_and_does_not_run(tmp_path, payload, target):
    folder, _ = _write_cifar_pickles(
        tmp_path / "data", np.random.default_rng(5), fine=False, writer=_pickled(4)
    )
    # The payload is real: the standard unpickler runs it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps({b"data": payload(control)}))
    assert control.exists()

    sentinel = tmp_path / "SENTINEL"
    evil = {b"data": payload(sentinel), b"labels": [0], b"label_names": CIFAR10_NAMES}
    (folder / target).write_bytes(pickle.dumps(evil))
    with pytest.raises(ValueError, match=target) as excinfo:
        load_dataset(f"cifar10:{folder}")
    message = _one_line(excinfo)
    refused = "system" if payload is _RunsShell else "builtins.exec"
    assert "refused" in message and refused in message
    assert not sentinel.exists()


def test_pickle_truncated_and_corrupt(tmp_path):
    folder, batches = _write_cifar_pickles(
        tmp_path, np.random.default_rng(6), fine=False, writer=_pickled(4)
    )
    path = folder / "data_batch_2"
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], b"not a pickle at all", b""):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="data_batch_2") as excinfo:
            load_dataset(f"cifar10:{tmp_path}")
        _one_line(excinfo)
    wrong_shape = {**batches["data_batch_2"], b"data": np.zeros((3, 1000), np.uint8)}
    path.write_bytes(pickle.dumps(wrong_shape))
    with pytest.raises(ValueError, match="data_batch_2.*3072"):
        load_dataset(f"cifar10:{tmp_path}")
    wrong_count = {**batches["data_batch_2"], b"labels": [1, 2]}
    path.write_bytes(pickle.dumps(wrong_count))
    with pytest.raises(ValueError, match="data_batch_2.*labels"):
        load_dataset(f"cifar10:{tmp_path}")
    not_a_dict = [1, 2, 3]
    path.write_bytes(pickle.dumps(not_a_dict))
    with pytest.raises(ValueError, match="data_batch_2.*dict"):
        load_dataset(f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, image, check_contrast=False)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "imgs"
    images = {
        "train/cat/rgb.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "train/cat/grey.png": rng.integers(0, 256, (16, 20), dtype=np.uint8),
        "train/dog/rgba.png": rng.integers(0, 256, (20, 16, 4), dtype=np.uint8),
        "train/dog/flat.png": np.full((40, 60, 3), (200, 100, 50), dtype=np.uint8),
        "val/dog/a.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
    }
    for name, image in images.items():
        _save(root / name, image)
    (root / "train/cat/notes.txt").write_text("ignored: not an image")
    return root, images


def test_folder_decodes_colour_grey_rgba(image_folder):
    root, images = image_folder
    ds = load_dataset(f"folder:{root}", image_size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    assert getattr(ds, "images", None) is None  # lazy
    items = {os.path.relpath(f, root): ds[i] for i, f in enumerate(ds.files)}
    assert [items[k][1] for k in sorted(items)] == [0, 0, 1, 1]

    def chw(array):
        return torch.from_numpy(array.transpose(2, 0, 1) / 255).float()

    rgb, _ = items["train/cat/rgb.png"]
    assert rgb.dtype == torch.float32 and torch.equal(rgb, chw(images["train/cat/rgb.png"]))
    grey, _ = items["train/cat/grey.png"]  # 16 x 20: centre crop keeps columns 2..17
    expected = np.repeat(images["train/cat/grey.png"][:, 2:18, None], 3, axis=2)
    assert torch.equal(grey, chw(expected))
    rgba, _ = items["train/dog/rgba.png"]  # 20 x 16: rows 2..17, alpha dropped
    assert torch.equal(rgba, chw(images["train/dog/rgba.png"][2:18, :, :3]))
    flat, _ = items["train/dog/flat.png"]  # resized 40 x 60 -> 16 x 24, cropped
    expected = torch.tensor([200, 100, 50]).div(255).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(flat, expected.float(), atol=1e-6, rtol=0)

    val = load_dataset(f"folder:{root}", split="test", image_size=16)
    assert val.classes == ["cat", "dog"] and val.labels.tolist() == [1]
    assert torch.equal(val[0][0], chw(images["val/dog/a.png"]))
    default = load_dataset(f"folder:{root}")
    assert default[0][0].shape == (3, 224, 224)


def test_folder_bad_files_name_the_file(tmp_path):
    root = tmp_path / "bad"
    _save(root / "a/ok.png", np.zeros((10, 10, 3), dtype=np.uint8))
    _save(root / "a/tiny.png", np.zeros((5, 9, 3), dtype=np.uint8))
    (root / "a/broken.png").write_bytes(b"this is not a PNG")
    _save(root / "b/five.tif", np.zeros((12, 12, 5), dtype=np.uint8))
    ds = load_dataset(f"folder:{root}", image_size=8)
    by_name = {os.path.basename(f): i for i, f in enumerate(ds.files)}
    assert ds[by_name["ok.png"]][0].shape == (3, 8, 8)
    for name, reason in [("tiny.png", "smaller"), ("broken.png", "cannot read"), ("five.tif", "")]:
        with pytest.raises(ValueError, match=name) as excinfo:
            ds[by_name[name]]
        assert reason in _one_line(excinfo)


def test_folder_split_rules(tmp_path, image_folder):
    root = tmp_path / "flat"
    _save(root / "x/a.png", np.zeros((9, 9, 3), dtype=np.uint8))
    assert len(load_dataset(f"folder:{root}")) == 1
    with pytest.raises(ValueError, match="split='train'") as excinfo:
        load_dataset(f"folder:{root}", split="test")
    _one_line(excinfo)
    with_train, _ = image_folder
    _save(with_train / "val/bird/b.png", np.zeros((9, 9, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="bird"):
        load_dataset(f"folder:{with_train}", split="val")
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_dataset(f"folder:{root}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="textures.*cifar10:PATH.*folder:PATH") as excinfo:
        load_dataset("mnist")
    _one_line(excinfo)
    with pytest.raises(ValueError, match="cifar10:PATH"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="split"):
        load_dataset("textures", split="validation")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin"):
        load_dataset(f"cifar10:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="cifar-100-binary"):
        load_dataset(f"cifar100:{tmp_path}")
    with pytest.raises(ValueError, match="32"):
        load_dataset(f"cifar10:{tmp_path}", image_size=64)
    with pytest.raises(TypeError, match="options"):
        load_dataset(f"cifar10:{tmp_path}", train_per_class=3)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("textures", image_size=0)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def test_channel_statistics_match_numpy(image_folder, monkeypatch):
    ds = load_dataset("textures", train_per_class=20, test_per_class=5)
    pixels = ds.images.numpy().astype(np.float64) / 255
    mean, std = channel_statistics(ds, batch_size=7)
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-11, atol=0)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-11, atol=0)
    # In-memory data are summed exactly: the mean is the correctly rounded fraction.
    per_channel = ds.images.numpy().transpose(1, 0, 2, 3).reshape(3, -1).astype(np.int64)
    n = per_channel.shape[1]
    exact = [float(Fraction(int(s), 255 * n)) for s in per_channel.sum(axis=1)]
    assert mean == exact
    assert statistics._uint8_statistics(ds.images, chunk=7) == (mean, std)  # chunked sums

    # Streamed path (any dataset of (image, label)), in uneven batches.
    as_list = [ds[i] for i in range(0, len(ds), 3)]
    mean, std = channel_statistics(as_list, batch_size=4)
    reference = np.stack([image.double().numpy() for image, _ in as_list])
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, reference.std(axis=(0, 2, 3)), rtol=1e-12)

    root, _ = image_folder
    folder = load_dataset(f"folder:{root}", image_size=16)
    reference = np.stack([folder[i][0].double().numpy() for i in range(len(folder))])
    mean, std = channel_statistics(folder, batch_size=3)
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, reference.std(axis=(0, 2, 3)), rtol=1e-12)


def test_channel_statistics_hand_computed():
    # Channel 0 holds 0 and 255 (mean 1/2, std 1/2); channel 1 is constant 51 (0.2, 0).
    images = torch.tensor([[[[0]], [[51]]], [[[255]], [[51]]]], dtype=torch.uint8)
    mean, std = channel_statistics(ImageDataset(images, [0, 0], ["only"]))
    assert mean == [0.5, 0.2] and std == [0.5, 0.0]


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


def _shifted(image, dy, dx):
    """Zero-filled translation, out[y, x] = image[y - dy, x - dx], by slicing."""
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_augment_flips_are_mirror_images():
    x = torch.rand(64, 3, 5, 7)
    out = augment(x, generator=torch.Generator().manual_seed(0))
    flipped = 0
    for a, b in zip(x.numpy(), out.numpy()):
        if np.array_equal(a, b[..., ::-1]):
            flipped += 1
        else:
            assert np.array_equal(a, b)
    assert 10 < flipped < 54
    assert augment(x, flip=False) is x


def test_augment_shifts_with_zero_fill():
    x = torch.rand(48, 2, 6, 7) + 0.1  # no zeros, so the fill is visible
    max_shift = 2
    out = augment(x, flip=False, max_shift=max_shift, generator=torch.Generator().manual_seed(1))
    offsets = set()
    for a, b in zip(x.numpy(), out.numpy()):
        matches = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
            if np.array_equal(_shifted(a, dy, dx), b)
        ]
        assert len(matches) == 1 and max(map(abs, matches[0])) <= max_shift
        offsets.add(matches[0])
    assert len(offsets) >= 15  # most of the 25 offsets occur


def test_augment_flip_and_shift_deterministic():
    x = torch.rand(16, 3, 8, 8)

    def run(seed):
        return augment(x, max_shift=3, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for image, result in zip(x.numpy(), a.numpy()):
        candidates = [image, image[..., ::-1]]
        assert any(
            np.array_equal(_shifted(src, dy, dx), result)
            for src in candidates
            for dy in range(-3, 4)
            for dx in range(-3, 4)
        )
    uint8 = augment((x * 255).to(torch.uint8), max_shift=1)
    assert uint8.dtype == torch.uint8 and uint8.shape == x.shape
    with pytest.raises(ValueError, match="max_shift"):
        augment(x, max_shift=-1)


@pytest.mark.cuda
def test_augment_on_cuda_matches_cpu():
    x = torch.rand(32, 3, 8, 8)
    cpu = augment(x, max_shift=2, generator=torch.Generator().manual_seed(2))
    gpu = augment(x.cuda(), max_shift=2, generator=torch.Generator().manual_seed(2))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)

"""Trainer: deterministic item order, schedules, learning, checkpoints, kill-and-resume."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import io as skio
from torch.utils.data import Dataset

from invert.data import ImageDataset
from invert.nn.zoo import create_model
from invert.train.batches import epoch_order
from invert.train.checkpoints import load_checkpoint, load_training_state
from invert.train.recipe import Hardware, ModelSettings, Recipe, get_recipe, learning_rate_factor
from invert.train.trainer import (
    he_init,
    parse_model_spec,
    train,
    train_from_spec,
    training_state_path,
)

SMALL = Recipe(
    name="test", epochs=2, batch_size=16, lr=0.02, schedule="constant",
    hardware=Hardware(eval_batch_size=64),
)  # fmt: skip


def _separable(n_per_class=24, size=32, seed=0):
    """Two classes that differ in colour: class 0 reddish, class 1 bluish, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 60, (2 * n_per_class, 3, size, size), generator=generator)
    images = noise.clone()
    images[:n_per_class, 0] += 180
    images[n_per_class:, 2] += 180
    labels = torch.arange(2).repeat_interleave(n_per_class)
    return ImageDataset(images.to(torch.uint8), labels, ["red", "blue"], spec="synthetic")


class _Lazy(Dataset):
    """The same items without ``.images``: forces the DataLoader path."""

    def __init__(self, dataset):
        self.inner = dataset
        self.classes = dataset.classes
        self.spec = dataset.spec

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        return self.inner[index]


def _model(seed=0, name="convpool_c", dropout=0.0):
    torch.manual_seed(seed)
    return he_init(create_model(name, num_classes=2, width=0.125, dropout=dropout))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# --- pure pieces --------------------------------------------------------------------------


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    a = epoch_order(50, seed=3, epoch=2)
    assert torch.equal(a, epoch_order(50, seed=3, epoch=2))
    assert sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_order(50, seed=3, epoch=1))
    assert not torch.equal(a, epoch_order(50, seed=4, epoch=2))
    # the global RNG plays no part
    torch.manual_seed(123)
    b = epoch_order(50, seed=3, epoch=2)
    torch.rand(10)
    assert torch.equal(a, b) and torch.equal(a, epoch_order(50, seed=3, epoch=2))


@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (7, 2)])
def test_epoch_order_shards_cover_the_epoch_like_a_distributed_sampler(n, world):
    full = epoch_order(n, seed=0, epoch=5)
    shards = [epoch_order(n, seed=0, epoch=5, rank=r, world_size=world) for r in range(world)]
    per_rank = math.ceil(n / world)
    assert all(len(s) == per_rank for s in shards)
    # interleaved, with the head of the permutation reused as padding
    padded = torch.cat([full, full[: per_rank * world - n]])
    for r, shard in enumerate(shards):
        assert torch.equal(shard, padded[r::world])
    with pytest.raises(ValueError):
        epoch_order(n, seed=0, epoch=0, rank=world, world_size=world)


def test_learning_rate_schedules_match_their_formulas():
    cos = Recipe(epochs=4, schedule="cosine")
    steps = 10
    for step in (0, 7, 20, 39):
        expected = 0.5 * (1 + math.cos(math.pi * step / 40))
        assert learning_rate_factor(cos, step, steps) == pytest.approx(expected)
    warm = Recipe(epochs=4, schedule="cosine", warmup_epochs=1)
    assert learning_rate_factor(warm, 0, steps) == pytest.approx(0.1)
    assert learning_rate_factor(warm, 9, steps) == pytest.approx(1.0)
    assert learning_rate_factor(warm, 25, steps) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 15 / 30))
    )
    step = Recipe(epochs=10, schedule="step", milestones=(3, 6), gamma=0.5)
    assert [learning_rate_factor(step, e * steps, steps) for e in (0, 2, 3, 5, 6, 9)] == [
        1,
        1,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    assert learning_rate_factor(Recipe(schedule="constant"), 99, steps) == 1.0


def test_recipes_and_their_validation():
    assert get_recipe("tiny").epochs <= 3
    paper = get_recipe("paper", arch="convpool_c")
    assert paper.momentum == 0.9 and paper.weight_decay > 0 and paper.model.width == 1.0
    assert get_recipe("paper", arch="vgg_crelu1").max_shift == 4
    custom = Recipe(epochs=1)
    assert get_recipe(custom) is custom
    assert get_recipe("fast").replace(epochs=3, lr=None).epochs == 3
    with pytest.raises(ValueError, match="valid recipes: tiny, fast, paper"):
        get_recipe("slow")
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(schedule="linear")):
        with pytest.raises(ValueError):
            Recipe(**bad)
    with pytest.raises(ValueError):
        ModelSettings(dropout=1.5)


def test_parse_model_spec_splits_on_the_first_at():
    assert parse_model_spec("vgg@folder:/a@b") == ("vgg", "folder:/a@b")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        parse_model_spec("nope@textures")
    for bad in ("convpool_c", "@textures", "convpool_c@"):
        with pytest.raises(ValueError, match="MODEL@DATA"):
            parse_model_spec(bad)


def test_he_init_keeps_the_signal_alive():
    # reference: the second moment of the pre-activations stays O(1) through 9 layers
    for name in ("convpool_c", "convpool_c_crelu", "convpool_c_avr"):
        torch.manual_seed(0)
        net = he_init(create_model(name, width=0.5, dropout=0.0)).eval()
        moments = {}

        def record(module, args, output, moments=moments):
            moments[module] = output.square().mean().item()

        hooks = [getattr(net, f"conv{i}").conv.register_forward_hook(record) for i in range(1, 10)]
        with torch.no_grad():
            net(torch.randn(8, 3, 32, 32))
        for hook in hooks:
            hook.remove()
        assert len(moments) == 9
        assert all(0.05 < v < 20 for v in moments.values()), (name, list(moments.values()))


# --- training -----------------------------------------------------------------------------


def test_training_reduces_the_loss_and_learns_separable_data():
    data = _separable()
    model = _model()
    images = data.images.float() / 255
    model.normalize.set_statistics(*_channel_stats(images))
    model.eval()
    with torch.no_grad():
        before = F.cross_entropy(model(images), data.labels).item()
    history = train(
        model, data, test_set=data, recipe=SMALL.replace(epochs=3), device="cpu", progress=False
    )
    assert not model.training
    with torch.no_grad():
        logits = model(images)
    after = F.cross_entropy(logits, data.labels).item()
    assert after < 0.8 * before
    assert (logits.argmax(1) == data.labels).float().mean().item() >= 0.75
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["test_loss"] == pytest.approx(after, rel=1e-4)


def _channel_stats(images):
    mean = images.mean(dim=(0, 2, 3))
    std = images.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    return mean.tolist(), std.tolist()


def test_normalization_comes_from_the_training_set():
    data = _separable()
    model = _model()
    train(model, data, recipe=SMALL.replace(epochs=1), device="cpu", progress=False)
    mean, std = _channel_stats(data.images.double() / 255)
    got_mean, got_std = model.normalize.statistics()
    assert got_mean == pytest.approx(mean, abs=1e-6) and got_std == pytest.approx(std, abs=1e-6)


def test_data_loader_path_matches_the_in_memory_path():
    # pixels 0 or 255 only: x / 255 is exact, so the streamed channel statistics of the
    # lazy set equal the exact integer ones of the in-memory set to the last bit
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(20)
    chance = torch.full((40, 3, 1, 1), 0.3)
    chance[labels == 0, 0] = chance[labels == 1, 2] = 0.7
    images = (torch.rand(40, 3, 32, 32, generator=generator) < chance).to(torch.uint8) * 255
    data = ImageDataset(images, labels, ["red", "blue"], spec="binary")
    fast, lazy = _model(), _model()
    recipe = SMALL.replace(num_workers=0)
    train(fast, data, recipe=recipe, device="cpu", progress=False, seed=5)
    train(lazy, _Lazy(data), recipe=recipe, device="cpu", progress=False, seed=5)
    assert _same_weights(fast, lazy)


def test_checkpoint_each_epoch_and_resume_after_completion(tmp_path):
    data = _separable(n_per_class=16)
    out = tmp_path / "run" / "model.safetensors"
    model = _model()
    history = train(model, data, test_set=data, recipe=SMALL, out=out, device="cpu", progress=False)
    loaded = load_checkpoint(out, device="cpu")
    assert _same_weights(model, loaded)
    meta = loaded.metadata
    assert meta["classes"] == ["red", "blue"] and meta["data"] == "synthetic"
    assert meta["epochs"] == 2 and meta["history"] == history
    assert (
        meta["recipe"]["lr"] == SMALL.lr and meta["test_accuracy"] == history[-1]["test_accuracy"]
    )
    state = load_training_state(training_state_path(out))
    assert state["epoch"] == 2
    # a finished run resumes to itself: nothing more is trained
    again = _model(seed=9)
    assert train(again, data, recipe=SMALL, out=out, device="cpu", progress=False) == history
    assert _same_weights(model, again)
    # a different recipe cannot resume this state
    with pytest.raises(ValueError, match=r"recipe\.lr=0\.02.*--no-resume"):
        train(_model(), data, recipe=SMALL.replace(lr=0.1), out=out, device="cpu", progress=False)
    # ... unless asked to start over
    train(_model(), data, recipe=SMALL.replace(lr=0.1), out=out, resume=False, progress=False)
    assert load_checkpoint(out, device="cpu").metadata["recipe"]["lr"] == 0.1


def test_a_constant_channel_is_centred_not_scaled():
    data = _separable(n_per_class=8)
    data.images[:, 1] = 40  # no variance in green
    model = _model()
    train(model, data, recipe=SMALL.replace(epochs=1), device="cpu", progress=False)
    mean, std = model.normalize.statistics()
    assert mean[1] == pytest.approx(40 / 255) and std[1] == 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_divergence_and_misfit_inputs_are_reported():
    data = _separable(n_per_class=16)
    with pytest.raises(ValueError, match="diverged.*lower the learning rate"):
        train(_model(), data, recipe=SMALL.replace(lr=1e6), device="cpu", progress=False)
    big = create_model("allcnn_b", num_classes=2, width=0.0625)
    with pytest.raises(ValueError, match="do not fit allcnn_b"):
        train(big, _separable(n_per_class=2, size=8), recipe=SMALL, device="cpu", progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(_model(), ImageDataset(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), [], ["a"]))


# --- kill -9 and resume -------------------------------------------------------------------

KILL_RECIPE = Recipe(
    name="kill", epochs=5, batch_size=16, lr=0.02, schedule="cosine",
    hardware=Hardware(eval_batch_size=64, num_workers=0),
)  # fmt: skip


def _train_to(out, exit_code):
    """Body of the training processes (forked: no second import of torch)."""
    torch.set_num_threads(1)
    data = _separable(n_per_class=48)
    train(_model(dropout=0.3), data, recipe=KILL_RECIPE, out=out, device="cpu", progress=False)
    os._exit(exit_code)  # skip interpreter teardown inherited from the parent


def test_killed_and_resumed_run_ends_bit_identical(tmp_path):
    fork = multiprocessing.get_context("fork")
    out = tmp_path / "killed.safetensors"
    state = training_state_path(out)
    run = fork.Process(target=_train_to, args=(out, 0))
    run.start()
    try:
        deadline = time.monotonic() + 240
        while not state.exists():
            assert run.is_alive(), "the training process ended before its first epoch"
            assert time.monotonic() < deadline, "no training state after 240 s"
            time.sleep(0.01)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.join()
    assert run.exitcode == -signal.SIGKILL
    epoch = load_training_state(state)["epoch"]
    assert 1 <= epoch < KILL_RECIPE.epochs, "the run was not interrupted mid-training"
    resumed = fork.Process(target=_train_to, args=(out, 3))
    resumed.start()
    resumed.join(timeout=240)
    assert resumed.exitcode == 3

    # the reference: one uninterrupted run in this process (one thread, as there)
    reference = _model(dropout=0.3)
    data = _separable(n_per_class=48)
    train(reference, data, recipe=KILL_RECIPE, device="cpu", progress=False)
    final = load_checkpoint(out, device="cpu")
    assert final.metadata["epochs"] == KILL_RECIPE.epochs
    assert _same_weights(reference, final)
    assert load_training_state(state)["epoch"] == KILL_RECIPE.epochs


def test_pinned_cpu_threads_make_training_independent_of_the_callers_threads():
    """The summation order of a gradient depends on the thread count: without a pinned
    count the same run differs between 1 and 2 threads; with one it does not."""
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    data = ImageDataset(images.to(torch.uint8), torch.arange(64) % 4, list("abcd"))

    def weights(threads, pinned):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = he_init(create_model("convpool_c_crelu", num_classes=4, width=0.125, dropout=0.0))
        hardware = Hardware(num_workers=0, cpu_threads=1 if pinned else None)
        recipe = Recipe(epochs=1, batch_size=32, lr=0.02, hardware=hardware)
        train(net, data, recipe=recipe, device="cpu", progress=False)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    try:
        if torch.equal(weights(1, pinned=False), weights(2, pinned=False)):
            pytest.skip("this torch build sums gradients alike at 1 and 2 threads")
        assert torch.equal(weights(1, pinned=True), weights(2, pinned=True))
        assert torch.get_num_threads() == 2  # the trainer restores the caller's count
    finally:
        torch.set_num_threads(1)


def test_bad_runs_are_refused_before_any_training(tmp_path, monkeypatch):
    import invert.train.loop as trainer_module

    steps = []
    monkeypatch.setattr(trainer_module, "train_step", lambda *a, **k: steps.append(1))
    one_class = ImageDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), [0] * 4, ["cat"])
    with pytest.raises(ValueError, match=r"1 class \('cat'\); a classifier needs at least two"):
        train(_model(), one_class, recipe=SMALL, device="cpu", progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to the folder of the checkpoint"):
        train(_model(), _separable(), recipe=SMALL, out=blocker / "m.safetensors",
              device="cpu", progress=False)  # fmt: skip
    folder = tmp_path / "one"
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True)
        skio.imsave(folder / split / "a" / "0.png", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="a classifier needs at least two"):
        train_from_spec(f"convpool_c@folder:{folder}", recipe="tiny", device="cpu",
                        progress=False)  # fmt: skip
    assert not steps


# --- matched runs (issue 16) ----------------------------------------------------------------


def _record_batches(monkeypatch):
    """Patch the trainer's batch iterator to log the sample indices of every step."""
    import invert.train.loop as trainer_module

    seen = []
    original = trainer_module.iterate_batches

    def recording(dataset, batches, *args, **kwargs):
        seen.append([b.tolist() for b in batches])
        return original(dataset, batches, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "iterate_batches", recording)
    return seen


def test_variants_trained_with_one_seed_see_the_same_batches_in_the_same_order(monkeypatch):
    """The matched design of crelu figures: every variant trained with seed s visits the
    same sample indices in the same order in every epoch; another seed does not."""
    data = _separable(n_per_class=24)
    logs = {}
    for name, seed in (("convpool_c", 5), ("convpool_c_crelu", 5), ("convpool_c_crelu_half", 5),
                       ("convpool_c", 6)):  # fmt: skip
        seen = _record_batches(monkeypatch)
        model = create_model(name, num_classes=2, width=0.125, dropout=0.0)
        train(model, data, recipe=SMALL, device="cpu", progress=False, seed=seed)
        monkeypatch.undo()
        logs[name, seed] = seen
    reference = logs["convpool_c", 5]
    assert len(reference) == SMALL.epochs and len(reference[0]) == 48 // 16
    for epoch in reference:  # every item once per epoch, in a shuffled order
        flat = [i for batch in epoch for i in batch]
        assert sorted(flat) == list(range(48)) and flat != list(range(48))
    assert reference[0] != reference[1]  # a new order each epoch
    assert logs["convpool_c_crelu", 5] == reference
    assert logs["convpool_c_crelu_half", 5] == reference
    assert logs["convpool_c", 6] != reference


def test_matched_runs_start_from_the_same_conv1_weights():
    """train_from_spec seeds the initial weights by the run's seed alone: ReLU and CReLU
    variants (same conv1 shape) start from the same conv1 filters."""
    from invert.train.trainer import build_model

    data = _separable(n_per_class=4)
    weights = {}
    for name in ("alexnet64", "alexnet64_crelu", "convpool_c", "convpool_c_crelu"):
        weights[name] = build_model(name, data, "tiny", seed=3).conv1.conv.weight.detach()
    assert torch.equal(weights["alexnet64"], weights["alexnet64_crelu"])
    assert torch.equal(weights["convpool_c"], weights["convpool_c_crelu"])
    assert not torch.equal(
        weights["convpool_c"], build_model("convpool_c", data, "tiny", seed=4).conv1.conv.weight
    )


def test_cuda_settings_fall_back_to_plain_float32_on_the_cpu():
    """bf16 autocast and channels_last are CUDA-only: on the CPU a recipe asking for them
    trains exactly as one that does not (the GPU path itself needs a GPU to test)."""
    from invert.train.settings import RunSettings
    from invert.train.trainer import Trainer

    data = _separable(n_per_class=8)
    runs = []
    for amp in (True, False):
        recipe = SMALL.replace(amp=amp, channels_last=amp, epochs=1)
        torch.manual_seed(0)
        model = he_init(create_model("convpool_c", num_classes=2, width=0.125, dropout=0.0))
        run = RunSettings(recipe=recipe, device="cpu", progress=False, seed=1)
        trainer = Trainer(model, data, settings=run)
        assert trainer.amp_dtype is None and trainer.channels_last is False
        history = trainer.fit()
        runs.append((model.state_dict(), history[-1]["train_loss"]))
    (first, loss_first), (second, loss_second) = runs
    assert loss_first == loss_second
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert first[key].is_contiguous()  # no channels_last on the CPU

"""Training throughput: our trainer vs a plain eager PyTorch loop, side by side.

Both sides train the same architecture from the same initial weights on the same
in-memory images with the same batch size and SGD settings. The plain loop is what
one writes by hand: ``model.train()``, the images already as a float tensor, a
random permutation, forward, cross-entropy, backward, ``optimizer.step()`` --
nothing else. Ours is :meth:`invert.train.Trainer.run_epoch` as the ``fast`` recipe
runs it: uint8 -> float per batch, random flips, gradient-norm clipping, the
learning-rate schedule, loss and accuracy bookkeeping, the seeded per-epoch order.
Epochs alternate between the two (ours, plain, ours, ...) so that a busy machine
slows both alike; the median of the per-round ratios, by wall time and by process
CPU time (less distorted by other processes), is the result (goal on the CPU:
>= 0.95).

With CUDA, a second comparison: ours in bfloat16 autocast + channels_last against
the plain loop in float32 (goal >= 2x).

    python bench/train_throughput.py                       # CPU, prints the ratio
    python bench/train_throughput.py --device cuda --model vgg --width 1 --batch-size 128
    python bench/train_throughput.py --device cuda --model alexnet64 --width 1 --batch-size 256
    python bench/train_throughput.py --record              # also append to RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from record import append_results

from figures.common import machine_line as machine
from invert.data import ImageDataset
from invert.nn.zoo import create_model
from invert.train.recipe import Hardware, Recipe
from invert.train.trainer import RunSettings, Trainer, he_init

LR = 0.002


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Wall and process CPU time of a block (CPU time is what contention distorts least)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def plain_epoch(model, optimizer, images, labels, batch_size, generator, device):
    """A hand-written epoch: float images in memory, no extras. Returns (images, clock)."""
    with _Clock(device) as clock:
        model.train()
        order = torch.randperm(len(images), generator=generator).to(images.device)
        seen = 0
        for i in range(len(images) // batch_size):
            index = order[i * batch_size : (i + 1) * batch_size]
            x, y = images[index], labels[index]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen, clock


def ours_epoch(trainer, epoch, device):
    with _Clock(device) as clock:
        trainer.run_epoch(epoch)
    return trainer.steps_per_epoch() * trainer.recipe.batch_size, clock


def compare(args, device, *, amp: bool, plain_dtype=torch.float32):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    size = args.image_size
    images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8,
                           generator=generator)  # fmt: skip
    labels = torch.randint(0, 10, (args.images,), generator=generator)
    data = ImageDataset(images, labels, [str(i) for i in range(10)], spec="synthetic")
    model = he_init(create_model(args.model, num_classes=10, width=args.width))
    reference = copy.deepcopy(model).to(device)

    # ours as the fast recipe runs (gradient clipping included); a small rate keeps
    # both sides finite on random labels
    recipe = Recipe(
        name="bench", epochs=10**6, batch_size=args.batch_size, lr=LR, momentum=0.9,
        weight_decay=5e-4, schedule="cosine", grad_clip=1.0,
        hardware=Hardware(num_workers=0, amp=amp, channels_last=amp),
    )  # fmt: skip
    run = RunSettings(recipe=recipe, device=device, progress=False)
    trainer = Trainer(model, data, settings=run)
    trainer.setup()
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    # the plain loop gets its data ready-made: float32 in [0, 1] on the device
    floats = (images.float() / 255).to(device, plain_dtype)
    targets = labels.to(device)

    # warm-up: one epoch each (allocator, cuDNN autotuning, lazy imports)
    ours_epoch(trainer, 0, device)
    plain_epoch(reference, optimizer, floats, targets, args.batch_size, generator, device)
    rates = {"ours": [], "plain": [], "ours_cpu": [], "plain_cpu": []}
    for round_ in range(args.rounds):
        n, clock = ours_epoch(trainer, round_ + 1, device)
        rates["ours"].append(n / clock.wall)
        rates["ours_cpu"].append(n / clock.cpu)
        n, clock = plain_epoch(
            reference, optimizer, floats, targets, args.batch_size, generator, device
        )
        rates["plain"].append(n / clock.wall)
        rates["plain_cpu"].append(n / clock.cpu)
        print(
            f"  round {round_ + 1:2d}: ours {rates['ours'][-1]:8.1f} img/s "
            f"({rates['ours_cpu'][-1]:7.1f} per CPU s)   plain {rates['plain'][-1]:8.1f} img/s "
            f"({rates['plain_cpu'][-1]:7.1f} per CPU s)"
        )
    paired = [a / b for a, b in zip(rates["ours"], rates["plain"])]
    paired_cpu = [a / b for a, b in zip(rates["ours_cpu"], rates["plain_cpu"])]
    return {
        "ours": statistics.median(rates["ours"]),
        "plain": statistics.median(rates["plain"]),
        "ratio": statistics.median(paired),
        "ratio_cpu": statistics.median(paired_cpu),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convpool_c_crelu_half")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="images per epoch")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side (default: the model's input size, 32 or 64)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=11, help="timed epochs per side")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.image_size is None:
        from invert.nn.zoo import model_info

        args.image_size = min(64, model_info(args.model)["input_size"])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    setup = (
        f"model {args.model} width {args.width}, batch {args.batch_size}, {args.images} "
        f"images of {args.image_size} x {args.image_size} per epoch, {args.rounds} alternating "
        f"timed epochs per side, "
        f"{torch.get_num_threads()} CPU thread(s), device {device}"
    )
    print(setup)
    lines = []
    r = compare(args, device, amp=False)
    lines.append(
        f"- float32: ours {r['ours']:.1f} img/s, plain eager loop {r['plain']:.1f} img/s "
        f"(medians); median paired ratio {r['ratio']:.3f} by wall time, "
        f"{r['ratio_cpu']:.3f} by process CPU time (goal >= 0.95)"
    )
    print(lines[-1])
    if device.type == "cuda":
        r = compare(args, device, amp=True)
        lines.append(
            f"- bf16 autocast + channels_last (ours) {r['ours']:.1f} img/s vs float32 plain "
            f"eager {r['plain']:.1f} img/s: median paired ratio {r['ratio']:.2f}x (goal >= 2x)"
        )
        print(lines[-1])
    if args.record:
        command = "python bench/train_throughput.py " + " ".join(argv or sys.argv[1:])
        append_results(
            "Training throughput: trainer vs plain eager loop",
            f"- {setup}\n" + "\n".join(lines),
            command=f"`{command.strip()}`",
            machine=machine(),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

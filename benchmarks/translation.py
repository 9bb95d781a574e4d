"""Translation-augmentation throughput, end to end: data set in memory -> augmented uint8 batch.

    python -m benchmarks.translation [--quick] [--json FILE]

Contenders, per image size (1×28×28 and 3×32×32 shifted by ±2 / ±4 px; 3×256 -> 224 random crops):

* ``ours``: the training path of :class:`~lightning_deepfeat.data.ImageClassificationDataModule`
  as the Trainer runs it: its loader yields :class:`~lightning_deepfeat.data.IndexBatch`
  and :meth:`~lightning_deepfeat.data.ImageClassificationDataModule.gather_augmented`
  gathers the batch out of the (once padded) training split with the shift or crop fused
  in: one copy per output byte;
* ``ours, gather_on_device=False``: the loader gathers the images, then the batched
  :class:`~lightning_deepfeat.data.RandomTranslate` / :class:`~lightning_deepfeat.data.RandomCrop`
  cut them (pad + crop: three copies);
* ``torchvision``: ``v2.RandomCrop(size, padding=s)`` applied per sample in a ``Dataset``,
  batched by a ``DataLoader`` with 0 and 2 worker processes (workers persistent, timed
  after a warm-up epoch, so their start-up is not counted);
* ``kornia``: the batched ``kornia.augmentation.RandomCrop`` on the gathered batch (it
  needs float, so the conversion is counted); skipped with a note when kornia is missing;
* at 256 -> 224 also ``clone``: a plain ``clone()`` of an already-cropped batch of the
  same size, the memory-bandwidth yardstick, in bytes/s (of output) next to ours; and the
  same fused crop written into one reused output buffer (``crop_batch(..., out=)``), which
  saves the fresh allocation per batch but is not what a data module may hand out (a
  callback that keeps a batch would see it overwritten).

Each figure is the median of several repeats. Two ratio columns: images/s over the
per-sample torchvision path with 0 workers, and over the faster of its 0- and 2-worker
runs. ``run(quick)`` returns the rows (dicts) and
prints the table; ``--quick`` finishes in about 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_deepfeat.data import ImageClassificationDataModule

CASES = (
    # name, stored shape, output (h, w), shift (0 for crop cases), batch size
    ("1x28x28 ±2", (1, 28, 28), (28, 28), 2, 512),
    ("3x32x32 ±4", (3, 32, 32), (32, 32), 4, 512),
    ("3x256->224", (3, 256, 256), (224, 224), 0, 128),
)


class _PerSample(Dataset):
    """The usual recipe: one uint8 image per ``__getitem__``, torchvision transform, default collate."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


class _Synthetic(ImageClassificationDataModule):
    """Random uint8 images in memory, through the real data-module training path."""

    num_classes = 10

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> None:
        type(self).image_shape = tuple(images.shape[1:])
        super().__init__(val_fraction=0.0, mean=[0.0] * images.shape[1], std=[1.0] * images.shape[1], **kwargs)
        self._images, self._labels = images, labels

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._images, self._labels


def _median_rate(fn: Any, images_per_call: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return images_per_call / statistics.median(times)


def _case_rows(
    name: str, shape: tuple[int, ...], out_hw: tuple[int, int], shift: int, batch: int, quick: bool
) -> list[dict[str, Any]]:
    from torchvision.transforms import v2

    batches = 4 if quick else 16
    if shape[-1] >= 128:
        batches = 2 if quick else 6
    repeats = 3 if quick else 7
    n = batch * batches
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (n,))
    out_bytes = n * shape[0] * out_hw[0] * out_hw[1]
    augmentation = {"translate": shift} if shift else {"crop_size": out_hw}
    modules = {}
    for on_device in (True, False):
        dm = modules[on_device] = _Synthetic(
            images, labels, batch_size=batch, seed=0, gather_on_device=on_device, **augmentation
        )
        dm.setup("fit")
    fused, plain = modules[True], modules[False]
    # the batches a Trainer given `datamodule=` gets (device_side), finished as on_after_batch_transfer does
    fused_loader = fused.loader("train", train=True, device_side=True)
    plain_loader = plain.loader("train", train=True, device_side=True)

    def ours() -> None:
        for batch_ in fused_loader:
            fused.gather_augmented(batch_.indices)

    def ours_plain() -> None:
        for x, _ in plain_loader:
            plain.augment(x)

    rows: list[dict[str, Any]] = []

    def add(method: str, rate: float | None, note: str = "", **extra: Any) -> None:
        rows.append({"case": name, "batch": batch, "method": method, "images_per_s": rate, "note": note, **extra})

    what = "shift" if shift else "crop"
    rate = _median_rate(ours, n, repeats)
    add(f"ours: data module, gather + {what} fused", rate, bytes_per_s=rate * out_bytes / n)
    rate = _median_rate(ours_plain, n, repeats)
    add(f"ours: gather_on_device=False, gather then {what}", rate, bytes_per_s=rate * out_bytes / n)

    tv = v2.RandomCrop(out_hw, padding=shift) if shift else v2.RandomCrop(out_hw)
    for workers in (0, 2):
        dl = DataLoader(
            _PerSample(images, labels, tv),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

        def per_sample(dl: DataLoader = dl) -> None:
            for _ in dl:
                pass

        reps = max(1, repeats // 2) if workers else repeats
        add(f"torchvision v2.RandomCrop per sample, DataLoader({workers} workers)", _median_rate(per_sample, n, reps))
        del dl

    try:
        import kornia.augmentation as K
    except ImportError:
        add("kornia RandomCrop (batched, float)", None, note="kornia not installed: pip install kornia")
    else:
        k_aug = K.RandomCrop(out_hw, padding=shift) if shift else K.RandomCrop(out_hw)

        def kornia_path() -> None:
            for x, _ in plain_loader:
                k_aug(x.float())

        add("kornia RandomCrop (batched, float)", _median_rate(kornia_path, n, repeats))

    if not shift:
        from lightning_deepfeat.data import crop_batch

        reused = torch.empty((batch, shape[0], *out_hw), dtype=torch.uint8)
        crop = fused.train_transforms[0]
        generator = torch.Generator().manual_seed(0)

        def into_reused() -> None:
            order = fused_loader.indices()
            for b in range(0, n, batch):
                idx = order[b : b + batch]
                top, left = crop.sample_corners(shape[-2:], idx.numel(), generator)
                crop_batch(images, top, left, out_hw, out=reused[: idx.numel()], index=idx)

        rate = _median_rate(into_reused, n, repeats)
        add("fused crop into one reused buffer (bound, unsafe to hand out)", rate, bytes_per_s=rate * out_bytes / n)
        ready = images[:batch, :, : out_hw[0], : out_hw[1]].contiguous()

        def clone() -> None:
            for _ in range(batches):
                ready.clone()

        rate = _median_rate(clone, n, repeats)
        add("clone() of the same-size batch (memory yardstick)", rate, bytes_per_s=rate * out_bytes / n)

    base = next(r["images_per_s"] for r in rows if "0 workers" in r["method"])
    best = max(r["images_per_s"] for r in rows if "per sample" in r["method"])
    for r in rows:
        r["vs_per_sample"] = r["images_per_s"] / base if r["images_per_s"] else None
        r["vs_best_per_sample"] = r["images_per_s"] / best if r["images_per_s"] else None
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<12} {'batch':>5}  {'method':<62} {'img/s':>11} {'MB/s':>9} {'× 0-worker':>10} "
        f"{'× best per-sample':>17}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        rate = f"{r['images_per_s']:,.0f}" if r["images_per_s"] else "-"
        mbps = f"{r['bytes_per_s'] / 1e6:,.0f}" if r.get("bytes_per_s") else ""
        ratio = f"{r['vs_per_sample']:.1f}" if r.get("vs_per_sample") else "-"
        best = f"{r['vs_best_per_sample']:.1f}" if r.get("vs_best_per_sample") else "-"
        lines.append(
            f"{r['case']:<12} {r['batch']:>5}  {r['method']:<62} {rate:>11} {mbps:>9} {ratio:>10} {best:>17}  "
            f"{r['note']}"
        )
    return "\n".join(lines)


def run(quick: bool = False, threads: int | None = 1) -> list[dict[str, Any]]:
    """Measure every case; print the table; return the rows (one dict per case and method).

    ``threads``: torch intra-op threads of this process while measuring (``None``: leave
    as is). The default 1 matches the DataLoader workers (which always run with one
    thread) and keeps the figures stable on a busy machine: with 2 threads on 2 shared
    cores, OpenMP's spinning threads slowed the batched path about 15× in our runs.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows: list[dict[str, Any]] = []
        for case in CASES:
            rows += _case_rows(*case, quick=quick)
        for r in rows:
            r["threads"] = torch.get_num_threads()
        print(
            f"translation throughput, torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
            f"{os.cpu_count()} CPUs, {'quick' if quick else 'full'} mode; "
            "data in memory -> augmented uint8 batch on CPU"
        )
        print(format_table(rows))
        return rows
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats (about 20 s)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads while measuring (default 1)")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, threads=args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

r"""``deepfeat prepare``: an image folder converted once into litdata shards, ready to stream from anywhere.

Layout in, layout out::

    SOURCE/<class>/<image>                     OUTPUT/train/index.json, chunk-*.bin   (litdata)
      or SOURCE/{train,val,test}/<class>/...   OUTPUT/val/...                        (when there is a val split)
                                               OUTPUT/deepfeat.json                  (what the data module reads)

Every image is decoded with PIL, converted to RGB and resized as Krizhevsky et al. did:
the shorter side to ``size`` (256), then the central ``size × size`` square
(``keep_aspect=True`` keeps the whole resized image instead). It is stored as JPEG
(``quality``) or as raw uint8 ``(3, H, W)`` tensors, with its class index, by
``litdata.optimize`` in parallel worker processes. ``deepfeat.json`` holds the class names,
the counts per split and class, the files that were skipped, and statistics of the
training images as stored (before JPEG compression), exact over every pixel: the
per-channel mean :math:`\mu_c` and std :math:`\sigma_c` in pixel units, the RGB covariance
:math:`\Sigma` and its eigen-decomposition for :class:`~lightning_deepfeat.data.PCALighting`.

Samples are written in a seeded random order, so that every shard holds a mix of classes
(a streaming loader reads a few shards at a time; shards of one class would give batches of
one class). With a single-split source, ``val_fraction`` holds out a seeded random share
of the images as the ``val`` split.

**Resume.** The work is cut into parts of about ``part_size`` images, appended one after
the other to the litdata data set (``optimize(mode="append")``); a marker is written when a
part is complete. Interrupted (Ctrl-C, a killed job, a lost machine) and run again with
the same source and options, it checks what the data set holds, removes the shards of the
part that was cut short and continues with that part. A part costs a few seconds of
process start-up, and each of its workers ends with one partly filled shard, so parts
should hold many shards' worth of images (the default: 50,000).

**Bad input** stops before any work with an error naming the path: a missing folder, a
folder without class folders, an empty class folder, a val/test class unknown to the
training split, an output folder that holds another data set (or anything else). An
image that cannot be read is skipped with a warning naming the file; the count of skipped
files is printed at the end and the files are listed in ``deepfeat.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightning_deepfeat.data.folder import class_folders, resolve_classes
from lightning_deepfeat.validation import check_bool, check_choice, check_int, check_number, check_path, fail

#: name of the metadata file beside the shards (what ``StreamingImageDataModule`` reads)
METADATA_FILE = "deepfeat.json"
#: ``format`` field of the metadata
METADATA_FORMAT = "lightning_deepfeat/prepared-images"
METADATA_VERSION = 1
#: folder of the resume state, removed when the preparation is complete
STATE_DIR = ".deepfeat_prepare"
#: the splits a source folder may hold, in this order
SPLITS = ("train", "val", "test")
ImageFormat = Literal["jpeg", "raw"]


def require_litdata() -> Any:
    """``import litdata``, or an ``ImportError`` saying how to install it (the ``streaming`` extra).

    litdata's check for a newer release on PyPI is switched off (``LITDATA_DISABLE_VERSION_CHECK``)
    unless the environment says otherwise: a library should not make network requests of its own.
    """
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    try:
        import litdata
    except ImportError as err:
        raise ImportError(
            "streaming data needs litdata, which is not installed: pip install 'lightning_deepfeat[streaming]' "
            f"(or pip install 'litdata>=0.2.76'). ({err})"
        ) from err
    return litdata


# ----------------------------------------------------------------------------- images
def resize_image(image: Any, size: int, keep_aspect: bool = False) -> Any:
    """A PIL image resized as Krizhevsky et al.: shorter side ``size`` (bilinear, antialiased), centre square.

    ``keep_aspect``: no square crop, the whole image with its shorter side ``size``.
    """
    from PIL import Image

    width, height = image.size
    if width <= height:
        new_w, new_h = size, max(size, round(height * size / width))
    else:
        new_w, new_h = max(size, round(width * size / height)), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if keep_aspect:
        return image
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike[str], size: int, keep_aspect: bool = False) -> Any:
    """Read ``path`` as RGB and resize it (:func:`resize_image`); raises whatever PIL raises for a bad file.

    For a JPEG much larger than the target, PIL's ``draft`` lets the decoder scale it by
    1/2, 1/4 or 1/8 in the DCT domain (never below the target), which makes the decode
    several times faster; the resize then finishes the job.
    """
    from PIL import Image

    with Image.open(path) as opened:
        width, height = opened.size
        scale = size / min(width, height)
        opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image = opened.convert("RGB")  # decodes: a truncated or corrupt file raises here
    return resize_image(image, size, keep_aspect)


class _GroupWriter:
    r"""The ``optimize`` function: one group of files in, one sample per readable file out, the group's tally on disk.

    Runs in litdata's worker processes. After the last file of a group it writes
    ``<state>/groups/g<id>.json`` (atomically): the number of samples, per class, the
    integer sums :math:`\sum x` and :math:`\sum x x^\top` over the pixels (exact, in any
    order) and the skipped files with the reason.
    """

    def __init__(
        self,
        source: str,
        groups: dict[int, list[tuple[str, int]]],
        groups_dir: str,
        size: int,
        keep_aspect: bool,
        image_format: str,
        quality: int,
    ) -> None:
        self.source, self.groups, self.groups_dir = source, groups, groups_dir
        self.size, self.keep_aspect, self.image_format, self.quality = size, keep_aspect, image_format, quality

    def __call__(self, group: int) -> Iterator[dict[str, Any]]:
        import torch

        count, pixels = 0, 0
        per_class: dict[int, int] = {}
        total = np.zeros(3, dtype=np.int64)
        outer = np.zeros((3, 3), dtype=np.int64)
        skipped: list[list[str]] = []
        for relative, label in self.groups[group]:
            try:
                image = load_image(os.path.join(self.source, relative), self.size, self.keep_aspect)
            except Exception as err:  # any failure to read the file as an image: skip it, say which and why
                skipped.append([relative, f"{type(err).__name__}: {err}"])
                continue
            array = np.asarray(image, dtype=np.uint8)
            flat = array.reshape(-1, 3).astype(np.int64)
            total += flat.sum(axis=0)
            outer += flat.T @ flat
            pixels += flat.shape[0]
            count += 1
            per_class[label] = per_class.get(label, 0) + 1
            if self.image_format == "jpeg":
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=self.quality)
                data: Any = buffer.getvalue()
            else:
                data = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            yield {"image": data, "label": int(label)}
        tally = {
            "images": count,
            "per_class": {str(k): v for k, v in sorted(per_class.items())},
            "pixels": pixels,
            "sum": total.tolist(),
            "sum_outer": outer.tolist(),
            "skipped": skipped,
        }
        _write_json(os.path.join(self.groups_dir, f"g{group:07d}.json"), tally)


# ----------------------------------------------------------------------------- scanning
def _scan_split(folder: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[str, int, int]]]:
    """``(class_names, [(path relative to folder's parent, label, bytes), ...])``; errors name the offender."""
    classes, found = resolve_classes(folder, classes)
    index = {name: i for i, name in enumerate(classes)}
    files: list[tuple[str, int, int]] = []
    for name in found:
        entries = sorted(
            (e for e in os.scandir(folder / name) if not e.name.startswith(".") and e.is_file()), key=lambda e: e.name
        )
        if not entries:
            raise ValueError(f"class folder {folder / name} is empty; every class needs at least one image.")
        files.extend((f"{folder.name}/{name}/{e.name}", index[name], e.stat().st_size) for e in entries)
    return classes, files


def scan_source(source: Path) -> tuple[str, list[str], dict[str, list[tuple[str, int, int]]]]:
    """``(layout, class_names, {split: [(relative path, label, bytes), ...]})`` of an image folder.

    ``layout`` is ``"splits"`` when ``source/train`` holds class folders (then ``val`` and
    ``test`` are used when present; paths are relative to ``source``), else ``"classes"``:
    ``source`` itself holds the class folders (one split, ``train``; paths relative to
    ``source``'s parent).
    """
    if not source.is_dir():
        raise FileNotFoundError(
            f"image folder {source} does not exist (expected {source}/<class>/<images> or "
            f"{source}/train/<class>/<images>)."
        )
    train = source / "train"
    if train.is_dir() and class_folders(train):
        classes, files = _scan_split(train, None)
        splits = {"train": files}
        for split in SPLITS[1:]:
            if (source / split).is_dir():
                splits[split] = _scan_split(source / split, classes)[1]
        return "splits", classes, splits
    classes, files = _scan_split(source, None)
    return "classes", classes, {"train": files}


# ----------------------------------------------------------------------------- the plan
def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file renamed over it)."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _identity(source: Path, options: dict[str, Any], splits: dict[str, list[tuple[str, int, int]]]) -> str:
    """A hash of what the data set is made of: the source folder, the options and every file (path, size)."""
    digest = hashlib.sha256(json.dumps({"source": str(source), "options": options}, sort_keys=True).encode())
    for split, files in splits.items():
        for relative, label, size in files:
            digest.update(f"{split}\0{relative}\0{label}\0{size}\n".encode())
    return digest.hexdigest()


def _assign(
    splits: dict[str, list[tuple[str, int, int]]], val_fraction: float, seed: int
) -> dict[str, list[tuple[str, int]]]:
    """The files of each split in the order they are written: a seeded permutation (and the held-out ``val``)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, int]]] = {}
    for split, files in splits.items():
        order = rng.permutation(len(files))
        out[split] = [(files[i][0], files[i][1]) for i in order]
    if val_fraction > 0:
        train = out["train"]
        held = int(round(val_fraction * len(train)))
        out["val"], out["train"] = train[:held], train[held:]
        if not out["val"] or not out["train"]:
            raise ValueError(
                f"`val_fraction`={val_fraction} leaves an empty split of the {len(train)} training images; "
                "choose a fraction that keeps at least one image on each side."
            )
    return {split: out[split] for split in SPLITS if split in out}


def _check_output(output: Path, identity: str, source: Path) -> Literal["new", "resume", "done"]:
    """What ``output`` holds: nothing yet, an unfinished run of this very job, or this data set already.

    Anything else (another data set, an unfinished run of another job, other files) is an
    error naming it, raised before any work.
    """
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"`output` {output} exists and is not a folder.")
    entries = [e.name for e in output.iterdir()] if output.exists() else []
    if not entries or (entries == [STATE_DIR] and not (output / STATE_DIR / "plan.json").is_file()):
        return "new"  # empty, or a run killed before it wrote its plan
    metadata = output / METADATA_FILE
    plan = output / STATE_DIR / "plan.json"
    if metadata.is_file():
        try:
            done = _read_json(metadata)
        except (OSError, ValueError):
            done = {}
        if done.get("identity") == identity:
            return "done"
        raise ValueError(
            f"`output` {output} already holds another data set (prepared from {done.get('source', '?')} with "
            f"{done.get('options', '?')}); choose an empty or new folder, or delete it first."
        )
    if plan.is_file():
        try:
            state = _read_json(plan)
        except (OSError, ValueError):
            state = {}
        if state.get("identity") == identity:
            return "resume"
        raise ValueError(
            f"`output` {output} holds an unfinished preparation of another data set (from "
            f"{state.get('source', '?')} with {state.get('options', '?')}); finish it with that command, or choose "
            f"another folder. (The source folder {source} or the options differ from that run's.)"
        )
    what = "a litdata data set (index.json)" if (output / "index.json").is_file() else "files"
    raise ValueError(
        f"`output` {output} is not empty: it holds {what} that `deepfeat prepare` did not write; "
        "choose an empty or new folder."
    )


# ----------------------------------------------------------------------------- the shards
def _committed(split_dir: Path) -> tuple[int, set[str]]:
    """Samples in the split's litdata ``index.json`` and the chunk files it lists (0 and none without one).

    The only place that reads litdata's index: the ``chunks`` list and, per chunk, its
    ``chunk_size`` (samples) and ``filename``.
    """
    index = split_dir / "index.json"
    if not index.is_file():
        return 0, set()
    try:
        chunks = _read_json(index)["chunks"]
        return sum(int(c["chunk_size"]) for c in chunks), {str(c["filename"]) for c in chunks}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeError(
            f"{index} is unreadable ({err}); the preparation cannot be resumed: delete {split_dir.parent} and run "
            "again."
        ) from err


def _remove_unlisted(split_dir: Path, listed: set[str]) -> None:
    """Delete what an interrupted part left in the split folder: every file the index does not list."""
    if not split_dir.is_dir():
        return
    for entry in os.scandir(split_dir):
        if entry.name != "index.json" and entry.name not in listed:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)


def _run_part(
    writer: _GroupWriter, inputs: list[int], split_dir: str, num_workers: int, chunk_bytes: int | str, conn: Any
) -> None:
    """Child process: append one part to the split's data set with ``litdata.optimize``; report errors on ``conn``.

    The child leads its own process group (litdata's workers join it), so that the parent
    can stop the whole part at once, and a watchdog thread kills the group if the parent
    dies (a killed ``deepfeat prepare`` leaves no worker writing behind it). The thread
    only sleeps and polls the parent's id: it holds no lock when litdata forks.
    """
    os.setpgrp()
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        from litdata import optimize

        optimize(
            fn=writer,
            inputs=inputs,
            output_dir=split_dir,
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            mode="append",
            reorder_files=False,
            start_method="fork",
            verbose=False,
        )
        conn.send(None)
    except BaseException as err:
        conn.send(f"{type(err).__name__}: {err}")
        raise


def _watch_parent(parent: int) -> None:
    """Kill this process group (the part's child and litdata's workers) as soon as the parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os.killpg(0, signal.SIGKILL)


@contextlib.contextmanager
def _exclusive(state: Path) -> Iterator[None]:
    """Hold ``state/lock`` (``flock``) while preparing: one writer per output folder.

    Forked children inherit the lock, so after a ``deepfeat prepare`` was killed a rerun
    waits until the workers it left are gone (their watchdog kills them within a second).
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no protection against two concurrent runs
        yield
        return
    with open(state / "lock", "a") as handle:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another `deepfeat prepare` is writing to {state.parent} (its lock {state / 'lock'} is "
                        "held); wait for it to finish or stop it first."
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Tally:
    """The group tallies read so far: totals for the metadata, warnings for skipped files, progress."""

    def __init__(self, root: Path, source_root: str) -> None:
        self.root, self.source_root = root, source_root
        self.seen: dict[str, dict[int, dict[str, Any]]] = {}

    def read(self, split: str, groups: Sequence[int], warn: bool = True) -> int:
        """Read the tallies of ``groups`` that exist and were not read yet; return how many files they covered."""
        seen = self.seen.setdefault(split, {})
        covered = 0
        folder = self.root / split / "groups"
        for group in groups:
            if group in seen:
                continue
            path = folder / f"g{group:07d}.json"
            if not path.is_file():
                continue
            tally = seen[group] = _read_json(path)
            covered += tally["images"] + len(tally["skipped"])
            if warn:
                for relative, reason in tally["skipped"]:
                    file = os.path.join(self.source_root, relative)
                    warnings.warn(f"skipped {file}: not readable as an image ({reason})", UserWarning, stacklevel=2)
        return covered

    def forget(self, split: str, groups: Sequence[int]) -> None:
        seen = self.seen.setdefault(split, {})
        for group in groups:
            seen.pop(group, None)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.root / split / "groups" / f"g{group:07d}.json")

    def has(self, split: str, groups: Sequence[int]) -> bool:
        """Whether the tallies of all ``groups`` were read (the part's workers finished them)."""
        seen = self.seen.get(split, {})
        return all(g in seen for g in groups)

    def images(self, split: str, groups: Sequence[int]) -> int:
        """Samples written by ``groups`` (read first)."""
        return sum(self.seen[split][g]["images"] for g in groups)


def _statistics(tallies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    r"""Mean, std, covariance (pixel units) and the PCA of the covariance of :math:`x / 255`, from group tallies."""
    from lightning_deepfeat.data.imagenet_transforms import rgb_pca

    pixels = sum(t["pixels"] for t in tallies)
    total = np.sum([np.asarray(t["sum"], dtype=np.int64) for t in tallies], axis=0)
    outer = np.sum([np.asarray(t["sum_outer"], dtype=np.int64) for t in tallies], axis=0)
    mean = total.astype(np.float64) / pixels
    covariance = outer.astype(np.float64) / pixels - np.outer(mean, mean)
    covariance = (covariance + covariance.T) / 2
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    values, vectors = rgb_pca(covariance / 255.0**2)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "rgb_covariance": covariance.tolist(),
        "pca": {"eigenvalues": values.tolist(), "eigenvectors": vectors.tolist(), "scale": 255.0},
    }


def _print(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def prepare_image_folder(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    size: int = 256,
    keep_aspect: bool = False,
    image_format: ImageFormat = "jpeg",
    quality: int = 90,
    val_fraction: float = 0.0,
    seed: int = 0,
    num_workers: int | None = None,
    chunk_bytes: int | str = "64MB",
    part_size: int = 50_000,
    group_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert an image folder into litdata shards and ``deepfeat.json``; resume an interrupted run.

    See the module docstring for the layouts, the resizing, the resume and the errors.

    Args:
        source: ``SOURCE/<class>/<image>`` or ``SOURCE/{train,val,test}/<class>/<image>``.
        output: the folder to write (created; must be empty, or hold an unfinished run of
            this same job, which is then resumed).
        size: length of the shorter side after resizing, and of the square (256 in the paper).
        keep_aspect: keep the whole resized image instead of its central square.
        image_format: ``"jpeg"`` (small shards, decoded when read) or ``"raw"`` (uint8, no decoding).
        quality: JPEG quality, 1-100.
        val_fraction: share of a single-split source held out as ``val`` (seeded by ``seed``);
            0 for none. Not allowed when the source has its own ``val`` folder.
        seed: seed of the write order (and of the held-out ``val`` share).
        num_workers: worker processes (default: the CPU count).
        chunk_bytes: target size of a shard (litdata's ``chunk_bytes``: ``"64MB"`` or bytes).
        part_size: images per resumable part (rounded to whole groups of ``group_size``).
        group_size: images per task handed to a worker.
        progress: show a progress bar and messages on stderr.

    Returns:
        The metadata written to ``output/deepfeat.json``.
    """
    src: Path = check_path("source", source, kind="directory").expanduser().resolve()
    out: Path = check_path("output", output, kind="directory").expanduser().resolve()
    size = check_int("size", size, low=1)
    keep_aspect = check_bool("keep_aspect", keep_aspect)
    image_format = check_choice("image_format", image_format, ImageFormat)
    quality = check_int("quality", quality, low=1, high=100)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=1.0, high_open=True)
    seed = check_int("seed", seed)
    workers = check_int("num_workers", num_workers, low=1, allow_none=True) or os.cpu_count() or 1
    if isinstance(chunk_bytes, str):
        if not chunk_bytes:
            raise fail("chunk_bytes", "a positive int (bytes) or a size such as '64MB'", chunk_bytes)
    else:
        chunk_bytes = check_int("chunk_bytes", chunk_bytes, low=1, hint="bytes, or a size such as '64MB'")
    part_size = check_int("part_size", part_size, low=1)
    group_size = min(check_int("group_size", group_size, low=1), part_size)
    progress = check_bool("progress", progress)
    if src == out or src in out.parents:
        raise ValueError(f"`output` {out} must not lie inside the source folder {src}.")

    # ---- everything that can be wrong with the input is checked here, before any work
    layout, classes, listing = scan_source(src)
    if val_fraction > 0 and "val" in listing:
        raise fail("val_fraction", f"0 when the source has its own val folder ({src / 'val'})", val_fraction)
    options = {
        "size": size,
        "keep_aspect": keep_aspect,
        "image_format": image_format,
        "quality": quality if image_format == "jpeg" else None,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    identity = _identity(src, options, listing)
    status = _check_output(out, identity, src)
    if status == "done":
        _print(f"{out} already holds this data set (from {src}); nothing to do.", progress)
        metadata: dict[str, Any] = _read_json(out / METADATA_FILE)
        return metadata
    state = out / STATE_DIR
    if status == "resume":
        plan = _read_json(state / "plan.json")
        part_groups, group_size = int(plan["part_groups"]), int(plan["group_size"])
        _print(f"resuming the preparation of {src} in {out}", progress)
    else:
        part_groups = max(1, part_size // group_size)
        state.mkdir(parents=True, exist_ok=True)
        _write_json(
            state / "plan.json",
            {
                "identity": identity,
                "source": str(src),
                "options": options,
                "group_size": group_size,
                "part_groups": part_groups,
            },
        )
    relative_root = str(src) if layout == "splits" else str(src.parent)
    order = _assign(listing, val_fraction, seed)
    job = _Job(out, state, relative_root, size, keep_aspect, image_format, quality)
    job.group_size, job.part_groups, job.workers, job.chunk_bytes = group_size, part_groups, workers, chunk_bytes
    tally = _Tally(state, relative_root)
    require_litdata()  # imported once here: every part's forked child inherits it

    bar = _progress_bar(sum(len(files) for files in order.values()), progress)
    try:
        with _exclusive(state):
            for split, files in order.items():
                _prepare_split(job, split, files, tally, bar)
    finally:
        bar.close()

    metadata = _metadata(src, identity, options, classes, order, tally, group_size)
    _write_json(out / METADATA_FILE, metadata)
    shutil.rmtree(state, ignore_errors=True)
    return metadata


@dataclasses.dataclass
class _Job:
    """Where and how a preparation writes."""

    output: Path
    state: Path
    source_root: str  # the sample paths are relative to this folder
    size: int
    keep_aspect: bool
    image_format: str
    quality: int
    group_size: int = 64
    part_groups: int = 1
    workers: int = 1
    chunk_bytes: int | str = "64MB"


def _prepare_split(job: _Job, split: str, files: list[tuple[str, int]], tally: _Tally, bar: Any) -> None:
    """Write (or finish writing) one split, part after part; skip the parts marked complete."""
    gs, output = job.group_size, job.output
    groups = [files[i : i + gs] for i in range(0, len(files), gs)]
    parts = [list(range(p, min(p + job.part_groups, len(groups)))) for p in range(0, len(groups), job.part_groups)]
    split_dir, split_state = output / split, job.state / split
    (split_state / "groups").mkdir(parents=True, exist_ok=True)
    expected = 0  # samples the data set holds after the parts done so far
    for number, part in enumerate(parts):
        marker = split_state / f"part{number:05d}.done"
        if marker.is_file():
            bar.update(tally.read(split, part, warn=False))
            expected += tally.images(split, part)
            continue
        committed, listed = _committed(split_dir)
        if committed != expected:
            # killed after litdata had written this part's index, before the marker: the part is complete
            bar.update(tally.read(split, part, warn=False))
            if not (tally.has(split, part) and committed == expected + tally.images(split, part)):
                raise RuntimeError(
                    f"{split_dir} holds {committed} samples where {expected} were expected after {number} complete "
                    f"part(s); the preparation cannot be resumed: delete {output} and run again."
                )
        else:
            _remove_unlisted(split_dir, listed)  # the shards of a part that was cut short
            tally.forget(split, part)
            writer = _GroupWriter(
                job.source_root,
                {g: groups[g] for g in part},
                str(split_state / "groups"),
                job.size,
                job.keep_aspect,
                job.image_format,
                job.quality,
            )
            _append_part(writer, part, split_dir, min(job.workers, len(part)), job.chunk_bytes, tally, split, bar)
            committed, _ = _committed(split_dir)
            if not tally.has(split, part) or committed != expected + tally.images(split, part):
                raise RuntimeError(
                    f"part {number} of {split} ended with {committed} samples in {split_dir}; expected "
                    f"{expected} + the part's."
                )
        expected = committed
        _write_json(marker, {"samples": committed})


def _append_part(
    writer: _GroupWriter,
    part: list[int],
    split_dir: Path,
    workers: int,
    chunk_bytes: int | str,
    tally: _Tally,
    split: str,
    bar: Any,
) -> None:
    """Run one part in a child process (which starts litdata's workers) while this one follows its progress.

    The child keeps this process free of threads: litdata forks its workers from the
    child, never from a process where a progress thread could hold a lock.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RuntimeError("`deepfeat prepare` needs the 'fork' start method (Linux, macOS).")
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run_part, args=(writer, part, str(split_dir), workers, chunk_bytes, send))
    child.start()
    send.close()
    try:
        while child.is_alive():
            bar.update(tally.read(split, part))
            child.join(timeout=0.2)
    except BaseException:  # Ctrl-C or any error here: stop the part's whole process group, then report
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid or 0, signal.SIGKILL)
        child.join()
        raise
    bar.update(tally.read(split, part))
    error = receive.recv() if receive.poll() else "the worker process ended without a report"
    if error is not None or child.exitcode != 0:
        raise RuntimeError(f"writing shards to {split_dir} failed (exit code {child.exitcode}): {error}")


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    class _Bar(tqdm):
        monitor_interval = 0  # no tqdm monitor thread: this process forks

    return _Bar(total=total, unit="img", desc="prepare", disable=not enabled, dynamic_ncols=True)


def _metadata(
    source: Path,
    identity: str,
    options: dict[str, Any],
    classes: list[str],
    order: dict[str, list[tuple[str, int]]],
    tally: _Tally,
    group_size: int,
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split, files in order.items():
        groups = list(range(-(-len(files) // group_size)))
        entries = [tally.seen[split][g] for g in groups]
        per_class = [0] * len(classes)
        for entry in entries:
            for label, count in entry["per_class"].items():
                per_class[int(label)] += count
        splits[split] = {
            "images": sum(e["images"] for e in entries),
            "per_class": per_class,
            "skipped": [item for e in entries for item in e["skipped"]],
        }
    train = [tally.seen["train"][g] for g in sorted(tally.seen["train"])]
    if not sum(t["pixels"] for t in train):
        raise ValueError(f"no image of {source} could be read: every file was skipped ({skipped_count(splits)}).")
    size = options["size"]
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "identity": identity,
        "source": str(source),
        "options": options,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "image_format": options["image_format"],
        "image_shape": [3, size, size],
        "keep_aspect": options["keep_aspect"],
        "class_names": classes,
        "num_classes": len(classes),
        "splits": splits,
        **_statistics(train),
    }


def skipped_count(splits: dict[str, Any]) -> int:
    """Number of files skipped over all ``splits`` (the ``splits`` entry of the metadata)."""
    return sum(len(entry["skipped"]) for entry in splits.values())


def skipped_files(metadata: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(split, file, reason)`` of every file that ``deepfeat prepare`` could not read."""
    return [(split, f, why) for split, entry in metadata["splits"].items() for f, why in entry["skipped"]]


# ----------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfeat prepare",
        description=(
            "Convert an image folder (SOURCE/<class>/<image>, or SOURCE/{train,val,test}/<class>/<image>) into "
            "litdata shards for StreamingImageDataModule: shorter side resized to --size, central square "
            "(Krizhevsky et al.), stored as JPEG or raw uint8, with class names, counts, mean/std and the RGB "
            "PCA in OUTPUT/deepfeat.json. Run it again after an interruption: it finishes the job."
        ),
    )
    parser.add_argument("source", help="the image folder")
    parser.add_argument("output", help="the output folder (new or empty; or an interrupted run's, to resume)")
    parser.add_argument("--size", type=int, default=256, help="shorter side and square size (default 256)")
    parser.add_argument("--keep-aspect", action="store_true", help="keep the whole resized image, no square crop")
    parser.add_argument("--format", dest="image_format", choices=["jpeg", "raw"], default="jpeg", help="default jpeg")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="hold out this share of a single-split source as val"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the write order and of the val share")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the CPU count)")
    parser.add_argument("--chunk-bytes", default="64MB", help="target shard size (default 64MB)")
    parser.add_argument("--part-size", type=int, default=50_000, help="images per resumable part (default 50000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def prepare_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``deepfeat prepare SOURCE OUTPUT [options]``: :func:`prepare_image_folder`, then a summary on stdout."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    chunk_bytes: int | str = int(args.chunk_bytes) if args.chunk_bytes.isdigit() else args.chunk_bytes
    metadata = prepare_image_folder(
        args.source,
        args.output,
        size=args.size,
        keep_aspect=args.keep_aspect,
        image_format=args.image_format,
        quality=args.quality,
        val_fraction=args.val_fraction,
        seed=args.seed,
        num_workers=args.workers,
        chunk_bytes=chunk_bytes,
        part_size=args.part_size,
        progress=not args.no_progress,
    )
    counts = ", ".join(f"{split} {entry['images']:,}" for split, entry in metadata["splits"].items())
    skipped = skipped_files(metadata)
    print(
        f"prepared {metadata['num_classes']} classes ({counts} images, {metadata['image_format']} "
        f"{metadata['image_shape'][1]}×{metadata['image_shape'][2]}) in {args.output}"
    )
    mean = ", ".join(f"{m:.2f}" for m in metadata["mean"])
    std = ", ".join(f"{s:.2f}" for s in metadata["std"])
    print(f"train mean [{mean}], std [{std}] (pixel units); metadata in {Path(args.output) / METADATA_FILE}")
    print(
        f"skipped {len(skipped)} file(s) that could not be read as images"
        + (f" (listed under 'skipped' in {METADATA_FILE})" if skipped else "")
    )
    return metadata


__all__ = [
    "METADATA_FILE",
    "ImageFormat",
    "load_image",
    "prepare_image_folder",
    "prepare_main",
    "require_litdata",
    "resize_image",
    "scan_source",
    "skipped_files",
]

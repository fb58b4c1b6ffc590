"""Image-folder trees ``train/<class>/*`` + ``test/<class>/*`` (folder, zip or tar), decoded in parallel.

Each image must be a 32x32 RGB picture, or is brought to one by ``data.resize`` (squeezed, or its
centre cropped); its size is checked from the header before any pixel is decoded, so a
decompression bomb is refused without being expanded. Decoder worker processes die
with their parent (Linux), so a killed `memgate data prepare` leaves no orphans behind.
"""

from __future__ import annotations

import io
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from .dataset import IMAGE_SHAPE, Dataset, checked
from .readers import Reader


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: ask Linux to SIGKILL this process when its parent dies (prctl). A parent
    killed between the fork and this call sends no signal, so a worker whose parent is already gone
    (reparented: another parent pid) exits here instead."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their pipe closes
        return
    if os.getppid() != parent:
        os._exit(1)


RESIZE_MODES = ("none", "resize", "crop")  # data.resize
MAX_SOURCE_PIXELS = 4096 * 4096  # a larger image is refused from its header (no decompression bombs)


def _to_32(im, mode: str):
    """``im`` as 32x32 RGB: squeezed whole ("resize"), or its shorter side scaled to 32 and the centre
    32x32 kept ("crop"); both with Pillow's antialiased bilinear filter."""
    from PIL import Image

    im = im.convert("RGB")
    w, h = im.size
    if mode == "crop":
        scale = 32 / min(w, h)
        w2, h2 = max(32, round(w * scale)), max(32, round(h * scale))
        im = im.resize((w2, h2), Image.Resampling.BILINEAR)
        left, top = (w2 - 32) // 2, (h2 - 32) // 2
        return im.crop((left, top, left + 32, top + 32))
    return im.resize((32, 32), Image.Resampling.BILINEAR)


def _decode_images(blobs: list[bytes], names: list[str], resize: str = "none") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(blobs), *IMAGE_SHAPE), dtype=np.uint8)
    for i, (blob, name) in enumerate(zip(blobs, names)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                exact = im.mode == "RGB" and im.size == (32, 32)  # from the header, before decoding pixels
                if not exact and resize == "none":
                    raise DataError(
                        f"data: image {name} is {im.size[0]}x{im.size[1]} {im.mode}, expected 32x32 RGB; "
                        "set data.resize=resize (squeeze) or data.resize=crop (centre crop) to bring it to 32x32"
                    )
                if im.size[0] * im.size[1] > MAX_SOURCE_PIXELS:
                    raise DataError(
                        f"data: image {name} is {im.size[0]}x{im.size[1]}, over {MAX_SOURCE_PIXELS:,d} pixels; "
                        "shrink the images before use"
                    )
                im.load()
                out[i] = np.asarray(im if exact else _to_32(im, resize))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"data: cannot decode image {name} ({e.__class__.__name__}); the file is corrupt") from None
    return out


def _parallel_decode(blobs: list[bytes], names: list[str], progress: bool, resize: str = "none") -> np.ndarray:
    from tqdm import tqdm

    chunk = 2500
    spans = [(i, min(i + chunk, len(blobs))) for i in range(0, len(blobs), chunk)]
    workers = min(len(spans), os.cpu_count() or 1)
    bar = tqdm(total=len(blobs), unit="img", desc="decoding", disable=not progress)
    parts = []
    with bar:
        if workers <= 1:
            for a, b in spans:
                parts.append(_decode_images(blobs[a:b], names[a:b], resize))
                bar.update(b - a)
        else:
            with ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
                jobs = pool.map(_decode_images, *zip(*[(blobs[a:b], names[a:b], resize) for a, b in spans]))
                for (a, b), arr in zip(spans, jobs):
                    parts.append(arr)
                    bar.update(b - a)
    return np.concatenate(parts) if parts else np.empty((0, *IMAGE_SHAPE), np.uint8)


def _read_classes(reader: Reader, classes_file: str, path: Path) -> tuple[str, ...]:
    try:
        text = reader.read(classes_file).decode("utf-8")
    except UnicodeDecodeError:
        why = "is not UTF-8 text; save it as UTF-8, one class a line"
        raise DataError(f"data: {classes_file} in {path} {why}") from None
    return tuple(c.strip() for c in text.splitlines() if c.strip())


def from_images(reader: Reader, path: Path, fmt: str, progress: bool, resize: str = "none") -> Dataset:
    names = reader.names()
    # Accept one common folder level above train/ and test/ (e.g. cifar10/train/...).
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    prefixes = set()
    for n in names:
        parts = PurePosixPath(n).parts
        if len(parts) >= 3 and parts[-3] in splits:
            prefixes.add(parts[:-3])
            splits[parts[-3]].setdefault(parts[-2], []).append(n)
    if not splits["train"] or not splits["test"]:
        raise DataError(f"data: {path} holds no train/<class>/* and test/<class>/* images; unknown layout or empty")
    if len(prefixes) > 1:
        raise DataError(
            f"data: {path} holds several train/ test/ trees ({sorted('/'.join(p) for p in prefixes)}); keep one"
        )
    prefix = "/".join(next(iter(prefixes)))
    train_cls, test_cls = set(splits["train"]), set(splits["test"])
    if train_cls != test_cls:
        only = sorted(train_cls ^ test_cls)
        raise DataError(
            f"data: {path}: class folders differ between train/ and test/ (only in one: {only[:5]}); make them match"
        )
    classes_file = f"{prefix}/classes.txt" if prefix else "classes.txt"
    if classes_file in names:
        classes = _read_classes(reader, classes_file, path)
        if set(classes) != train_cls:
            raise DataError(f"data: {classes_file} in {path} lists other classes than the folders; fix one of them")
    else:
        classes = tuple(sorted(train_cls))
    arrays, paths = {}, {}
    for split in ("train", "test"):
        files = [f for c in classes for f in sorted(splits[split][c])]
        labels = np.array([i for i, c in enumerate(classes) for _ in splits[split][c]], dtype=np.int64)
        blobs = reader.read_many(files)
        arrays[split] = (_parallel_decode(blobs, files, progress, resize), labels)
        paths[split] = tuple(files)
    dname = {10: "cifar10", 100: "cifar100"}.get(len(classes), PurePosixPath(path.name).stem)
    ds = Dataset(dname, classes, *arrays["train"], *arrays["test"], str(path), fmt, "", paths["train"])
    return checked(ds)

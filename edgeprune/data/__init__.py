"""Dataset specs -> train/val/test splits of ``(x float32 CHW, y int64)`` samples.

Consumes: a data spec string (docs/architecture.md, Specs):
  ``digits``                  scikit-learn's 1,797 handwritten 8x8 digits, shipped in the package
                              (``digits.npz``), upsampled to 1x32x32 and normalised;
  ``file.npz``                arrays ``x`` (float NCHW), ``y`` (int), optional ``split`` (0/1/2 per
                              sample = train/val/test; else a seeded stratified split);
  ``DIR``                     an image folder with one subfolder per class (or ``train/``, ``val/``,
                              optional ``test/`` subfolders, each with one subfolder per class);
  ``package.module:fn`` or ``path/file.py:fn``
                              a callable returning ``(train, val)`` or ``(train, val, test)`` datasets
                              (map-style, or an ``IterableDataset`` stream with ``.num_classes``)
                              or DataLoaders, or a ``DataSplits``.
Produces: ``DataSplits`` (``.train``, ``.val``, ``.test``, ``.num_classes``, ``.input_shape``).

``load_inputs`` reads the other kind of ``.npz``: unlabelled named model inputs (``input_ids``,
``attention_mask``, ... with no ``x``), the calibration set of a transformer, as {name: tensor}.

Bad specs and files raise ``DataError`` (a ``UserError``, so also a ``ValueError``) with one line
naming the file/spec and what is wrong; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from ..errors import UserError
from ..limits import MAX_CLASSES

__all__ = [
    "DataError",
    "DataSplits",
    "load",
    "load_inputs",
    "is_named_inputs",
    "stratified_split",
    "DIGITS_PATH",
    "SPEC_FORMS",
]

DIGITS_PATH = Path(__file__).with_name("digits.npz")
SPEC_FORMS = "'digits', 'file.npz', an image folder, 'package.module:fn' or 'path/file.py:fn'"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class DataError(UserError):
    """A data spec or file that cannot be read (one line naming it; CLI exit 2)."""


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# Split fractions used whenever a source has no split of its own.
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


@dataclass
class DataSplits:
    """Three datasets of ``(x float32 CHW, y int64)`` plus what a model needs to know about them."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    spec: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = "/".join(str(_safe_len(d)) for d in (self.train, self.val, self.test))
        return (
            f"DataSplits(spec={self.spec!r}, train/val/test={sizes}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def _safe_len(d) -> str | int:
    try:
        return len(d)
    except TypeError:
        return "?"


def stratified_split(
    y: np.ndarray, seed: int = 0, val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION
) -> np.ndarray:
    """Return a split code per sample (0 train, 1 val, 2 test), stratified by label, seeded.

    Each class contributes round(n_c * fraction) samples to val and to test, so class ratios
    are the same in every split (up to rounding); the permutation depends only on ``seed``.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        n_test = int(round(len(idx) * test_fraction))
        split[idx[:n_val]] = 1
        split[idx[n_val : n_val + n_test]] = 2
    return split


def _tensor_splits(
    x: np.ndarray, y: np.ndarray, split: np.ndarray, spec: str, num_classes: int | None = None, info: dict | None = None
) -> DataSplits:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    parts = [TensorDataset(xt[split == k], yt[split == k]) for k in (0, 1, 2)]
    for part, name in zip(parts, ("training", "validation", "test")):
        if len(part) == 0:  # every command trains, selects or reports on each of the three
            raise DataError(
                f"{spec}: the {name} split is empty ({len(y)} samples; without a 'split' array each class "
                f"gives {VAL_FRACTION:.0%} of its samples to validation and {TEST_FRACTION:.0%} to test, rounded); "
                "give 10 or more samples per class or a 'split' array with 0, 1 and 2"
            )
    n_cls = int(num_classes if num_classes is not None else (int(y.max()) + 1 if len(y) else 0))
    return DataSplits(
        *parts, num_classes=n_cls, input_shape=tuple(int(s) for s in x.shape[1:]), spec=spec, info=dict(info or {})
    )


# ---------------------------------------------------------------------------------------------
# digits

DIGITS_SIZE = 32


def _digits(seed: int) -> DataSplits:
    with np.load(DIGITS_PATH) as f:
        images = f["images"].astype(np.float32) / 16.0  # pixel values are 0..16
        target = f["target"].astype(np.int64)
    # 8x8 -> 32x32 bilinear: a size every pruning/export path handles like a real image.
    x = torch.from_numpy(images)[:, None]
    x = torch.nn.functional.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    # Fixed normalisation constants (not recomputed per split, so every split sees the same map).
    x = (x - 0.3) / 0.32
    split = stratified_split(target, seed=seed)
    return _tensor_splits(
        x.numpy(),
        target,
        split,
        "digits",
        num_classes=10,
        info={"source": "sklearn.datasets.load_digits (shipped copy)", "seed": seed},
    )


# ---------------------------------------------------------------------------------------------
# .npz


def _open_npz(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        f = np.load(path, allow_pickle=False)
    # zipfile raises NotImplementedError (an unknown compression or zip version) and RuntimeError
    # (an encrypted member) for archives it cannot read: the file's fault, not ours
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({first_line(e)})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive with arrays x and y")
    return f


def is_named_inputs(spec) -> bool:
    """Whether ``spec`` is an ``.npz`` of named model inputs (arrays, none called ``x``)."""
    if not isinstance(spec, str) or not spec.lower().endswith(".npz"):
        return False
    path = Path(spec).expanduser()
    if not path.is_file():
        return False
    with _open_npz(path) as f:
        names = list(getattr(f, "files", ()))
    return bool(names) and "x" not in names


def load_inputs(spec: str) -> dict[str, torch.Tensor]:
    """{name: tensor} of an ``.npz`` of named model inputs: every array numeric, at least 1-D, with
    one first dimension (the samples); integers become int64 (token ids), floats float32."""
    path = Path(spec).expanduser()
    out: dict[str, torch.Tensor] = {}
    with _open_npz(path) as f:
        for name in f.files:
            try:
                a = f[name]
            except ValueError as e:
                raise DataError(f"{path}: cannot read array {name!r} without pickle ({first_line(e)})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as e:
                raise DataError(f"{path}: corrupt .npz archive ({type(e).__name__}: {first_line(e)})") from None
            if a.ndim == 0 or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                raise DataError(
                    f"{path}: array {name!r} has shape {a.shape} dtype {a.dtype}; "
                    "expected numbers with the samples on the first axis"
                )
            if np.issubdtype(a.dtype, np.floating):
                if not np.isfinite(a).all():
                    raise DataError(f"{path}: array {name!r} contains NaN or infinite values")
                out[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            else:
                out[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    if not out:
        raise DataError(f"{path}: no arrays")
    counts = {n: int(t.shape[0]) for n, t in out.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: arrays have different sample counts {counts}; give every input the same first axis")
    if next(iter(counts.values())) == 0:
        raise DataError(f"{path}: no samples")
    return out


def _npz(path: Path, seed: int) -> DataSplits:
    f = _open_npz(path)
    with f:
        names = set(getattr(f, "files", ()))
        for need in ("x", "y"):
            if need not in names:
                raise DataError(
                    f"{path}: missing array '{need}' (found {sorted(names) or 'none'}); "
                    "expected x float32 NCHW, y int64 and optional split"
                )
        try:
            x, y = f["x"], f["y"]
            split = f["split"] if "split" in names else None
        except ValueError as e:  # object arrays need pickle, which we refuse
            raise DataError(f"{path}: cannot read arrays without pickle ({first_line(e)})") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError, RuntimeError) as e:
            raise DataError(f"{path}: corrupt .npz archive ({type(e).__name__}: {first_line(e)})") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: array 'x' has dtype {x.dtype}; expected float32")
    if x.ndim != 4:
        raise DataError(f"{path}: array 'x' has shape {x.shape}; expected 4-D NCHW")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: array 'y' has shape {y.shape} dtype {y.dtype}; expected 1-D int64 labels")
    if len(y) != len(x):
        raise DataError(f"{path}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    if len(y) == 0:
        raise DataError(f"{path}: no samples")
    if y.min() < 0:
        raise DataError(f"{path}: array 'y' has negative labels; expected class indices 0..K-1")
    if y.max() >= MAX_CLASSES:
        raise DataError(
            f"{path}: array 'y' has label {int(y.max())}; expected class indices 0..K-1 with K at most {MAX_CLASSES}"
        )
    if not np.isfinite(x).all():
        raise DataError(f"{path}: array 'x' contains NaN or infinite values")
    if split is None:
        split = stratified_split(y, seed=seed)
    else:
        if split.shape != y.shape or not np.issubdtype(split.dtype, np.integer):
            raise DataError(f"{path}: array 'split' must be 1-D integers with one entry per sample")
        bad = set(np.unique(split).tolist()) - {0, 1, 2}
        if bad:
            raise DataError(f"{path}: array 'split' has values {sorted(bad)}; expected 0 (train), 1 (val), 2 (test)")
        if not (split == 0).any():
            raise DataError(f"{path}: array 'split' selects no training samples (value 0)")
    return _tensor_splits(x, y, np.asarray(split, dtype=np.int64), str(path), info={"seed": seed})


# ---------------------------------------------------------------------------------------------
# image folder


def _pil():
    # Pillow is always there in practice: matplotlib (a dependency) requires it, and its own
    # image reader is Pillow underneath, so there is no second reader to fall back to.
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    Image = _pil()
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _image_mode_is_gray(path: Path) -> bool:
    Image = _pil()
    try:
        with Image.open(path) as im:
            return im.mode in ("1", "L", "I", "I;16", "F", "LA")
    except (OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_folder(root: Path, seed: int, image_size: int) -> DataSplits:
    sub = {p.name for p in _class_dirs(root)}
    presplit = {"train", "val"} <= sub
    split_roots = {0: root / "train", 1: root / "val"} if presplit else {0: root}
    if presplit and (root / "test").is_dir():
        split_roots[2] = root / "test"
    classes = [p.name for p in _class_dirs(split_roots[0])]
    if not classes:
        raise DataError(f"{root}: no class subfolders; expected one subfolder of images per class")
    files: list[tuple[Path, int, int]] = []  # (path, label, split)
    for k, r in split_roots.items():
        for c in _class_dirs(r):
            if c.name not in classes:
                raise DataError(f"{c}: class '{c.name}' is not among the training classes {classes}")
            files += [(p, classes.index(c.name), k) for p in _images_in(c)]
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    empty = [c for c in classes if not any(lbl == classes.index(c) and s == 0 for _, lbl, s in files)]
    if empty:
        raise DataError(f"{root}: class folders without training images: {empty}")
    # Grayscale only if every image is; one colour image makes the whole set RGB.
    channels = 1 if all(_image_mode_is_gray(p) for p, _, _ in files) else 3
    if len(files) >= STREAM_MIN_IMAGES:
        return _streamed_folder(root, files, classes, presplit, seed, image_size, channels)
    x = np.stack([_read_image(p, image_size, channels) for p, _, _ in files]).astype(np.float32)
    x = (x - 0.5) / 0.5
    y = np.array([lbl for _, lbl, _ in files], dtype=np.int64)
    if presplit:
        split = np.array([s for _, _, s in files], dtype=np.int64)
        if 2 not in split_roots:  # no test/ folder: evaluate on val
            xs, ys = x[split == 0], y[split == 0]
            xv, yv = x[split == 1], y[split == 1]
            d = DataSplits(
                TensorDataset(torch.from_numpy(xs), torch.from_numpy(ys)),
                TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
                TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
                num_classes=len(classes),
                input_shape=tuple(x.shape[1:]),
                spec=str(root),
                info={"classes": classes, "test_is_val": True},
            )
            return d
    else:
        split = stratified_split(y, seed=seed)
    return _tensor_splits(x, y, split, str(root), num_classes=len(classes), info={"classes": classes, "seed": seed})


# Folders with at least this many images are read from disk when a sample is indexed (DataLoader
# workers decode in parallel, sharded by rank; the set need not fit in memory); smaller ones are
# decoded once into tensors.
STREAM_MIN_IMAGES = 4096


class ImageFiles(Dataset):
    """Image files decoded on access into ``(x float32 CHW in [-1, 1], y int64)``, as the in-memory path does."""

    def __init__(self, paths: list[Path], labels: list[int], image_size: int, channels: int):
        self.paths, self.image_size, self.channels = list(paths), int(image_size), int(channels)
        self.targets = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        a = _read_image(self.paths[i], self.image_size, self.channels)
        return torch.from_numpy((a.astype(np.float32) - 0.5) / 0.5), self.targets[i]


def _streamed_folder(root: Path, files, classes, presplit, seed, image_size, channels) -> DataSplits:
    labels = np.array([lbl for _, lbl, _ in files], dtype=np.int64)
    split = np.array([s for _, _, s in files]) if presplit else stratified_split(labels, seed=seed)
    test_is_val = presplit and not (split == 2).any()  # no test/ folder: evaluate on val
    parts = []
    for k in (0, 1, 1 if test_is_val else 2):
        idx = np.flatnonzero(split == k)
        parts.append(ImageFiles([files[i][0] for i in idx], labels[idx].tolist(), image_size, channels))
    return DataSplits(
        *parts,
        num_classes=len(classes),
        input_shape=(channels, image_size, image_size),
        spec=str(root),
        info={"classes": classes, "streamed": True, **({"test_is_val": True} if test_is_val else {"seed": seed})},
    )


# ---------------------------------------------------------------------------------------------
# callables


def exec_file(path: Path, source: bytes | None = None):
    """Import the Python file ``path`` as a fresh module, running ``source`` (its bytes) if given.

    Passing the bytes lets a caller that verified them (a hash) run exactly what it checked.
    """
    mod_name = f"_edgeprune_user_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise DataError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # dataclasses/pickling look the module up by name
    try:
        if source is None:
            module_spec.loader.exec_module(module)
        else:
            exec(compile(source, str(path), "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


def resolve_callable(spec: str, what: str = "spec"):
    """``package.module:fn`` or ``path/file.py:fn`` -> the callable (ValueError if missing)."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise DataError(f"{what} {spec!r}: expected 'package.module:fn' or 'path/file.py:fn'")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"{what} {spec!r}: file {path} not found")
        module = exec_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise DataError(f"{what} {spec!r}: cannot import module '{target}' ({e})") from None
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise DataError(f"{what} {spec!r}: '{target}' has no callable '{name}'")
    return fn


def _as_dataset(obj, spec: str, which: str) -> Dataset:
    if isinstance(obj, DataLoader):
        return obj.dataset
    if isinstance(obj, Dataset) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        return obj
    raise DataError(f"data {spec!r}: the {which} part is a {type(obj).__name__}, expected a Dataset or DataLoader")


def _infer_num_classes(ds: Dataset) -> int:
    for attr in ("num_classes",):
        if isinstance(getattr(ds, attr, None), int):
            return getattr(ds, attr)
    if isinstance(getattr(ds, "classes", None), (list, tuple)):
        return len(ds.classes)
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return int(ds.tensors[1].max()) + 1
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return int(torch.as_tensor(targets).max()) + 1
    return int(max(int(ds[i][1]) for i in range(len(ds)))) + 1


def _from_callable(spec: str) -> DataSplits:
    fn = resolve_callable(spec, "data")
    out = fn()
    if isinstance(out, DataSplits):
        out.spec = out.spec or spec
        return out
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise DataError(f"data {spec!r}: returned {type(out).__name__}; expected (train, val) or (train, val, test)")
    parts = [_as_dataset(o, spec, w) for o, w in zip(out, ("train", "val", "test"))]
    if len(parts) == 2:
        parts.append(parts[1])  # no separate test split: evaluate on val, and say so in info
    if isinstance(parts[0], IterableDataset):  # a stream: no indexing, no length
        if not isinstance(getattr(parts[0], "num_classes", None), int):
            raise ValueError(f"data {spec!r}: the train part is an IterableDataset; give it an int .num_classes")
        x0 = next(iter(parts[0]))[0]
    else:
        x0 = parts[0][0][0]
    return DataSplits(
        *parts,
        num_classes=_infer_num_classes(parts[0]),
        input_shape=tuple(int(s) for s in torch.as_tensor(x0).shape),
        spec=spec,
        info={"test_is_val": len(out) == 2},
    )


# ---------------------------------------------------------------------------------------------


def load(spec: str | DataSplits, seed: int = 0, image_size: int = 32) -> DataSplits:
    """Resolve a data spec (see the module docstring) into ``DataSplits``.

    ``seed`` fixes the stratified split wherever the source has none; ``image_size`` is the
    square size image folders are resized to.
    """
    if isinstance(spec, DataSplits):
        return spec
    if not isinstance(spec, str) or not spec:
        raise DataError(f"data spec {spec!r}: expected {SPEC_FORMS}")
    if spec == "digits":
        return _digits(seed)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".npz"):
        return _npz(path, seed)
    if path.is_dir():
        return _image_folder(path, seed, image_size)
    if ":" in spec and not path.exists():
        return _from_callable(spec)
    if path.exists():
        raise DataError(f"{path}: unsupported data file; expected {SPEC_FORMS}")
    raise DataError(f"data spec {spec!r}: no such file or directory and not a known dataset; expected {SPEC_FORMS}")

"""edgeprune.data: the shipped digits, seeded stratified splits, .npz / image-folder / callable specs
and their error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import edgeprune as ep
from edgeprune.data import make_digits, stratified_split


def test_shipped_digits_equal_sklearn():
    from sklearn.datasets import load_digits

    sk = load_digits()
    with np.load(ep.data.DIGITS_PATH) as f:
        assert f["images"].shape == (1797, 8, 8)
        np.testing.assert_array_equal(f["images"], sk.images)
        np.testing.assert_array_equal(f["target"], sk.target)
    assert make_digits.check()


def test_digits_splits_shapes_and_types(digits):
    assert digits.num_classes == 10 and digits.input_shape == (1, 32, 32)
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797 and min(sizes) > 200
    x, y = digits.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_digits_upsampling_keeps_the_images():
    # 4x4 average pooling of the 32x32 image recovers the 8x8 original up to bilinear blur
    from sklearn.datasets import load_digits

    sk = load_digits()
    split = stratified_split(sk.target.astype(np.int64), seed=0)
    x_test = ep.data.load("digits").test.tensors[0]
    orig = torch.from_numpy(sk.images[split == 2].astype(np.float32) / 16.0)
    pooled = torch.nn.functional.avg_pool2d(x_test * 0.32 + 0.3, 4)[:, 0]
    assert pooled.shape == orig.shape
    corr = np.corrcoef(pooled.flatten().numpy(), orig.flatten().numpy())[0, 1]
    assert corr > 0.95


def test_split_is_deterministic_and_seed_dependent():
    a, b, c = ep.data.load("digits", seed=0), ep.data.load("digits", seed=0), ep.data.load("digits", seed=1)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).tensors[0], getattr(b, part).tensors[0])
        assert torch.equal(getattr(a, part).tensors[1], getattr(b, part).tensors[1])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_split_is_stratified():
    y = np.repeat(np.arange(4), [100, 40, 20, 60])
    split = stratified_split(y, seed=3)
    assert set(np.unique(split)) == {0, 1, 2}
    for c, n in zip(range(4), [100, 40, 20, 60]):
        in_c = split[y == c]
        assert (in_c == 1).sum() == round(n * 0.15)
        assert (in_c == 2).sum() == round(n * 0.15)
    digits_y = ep.data.load("digits").test.tensors[1].numpy()
    counts = np.bincount(digits_y, minlength=10)
    assert counts.min() >= 26 and counts.max() <= 28  # 15 % of 174..183 per class


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_and_without_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 20).astype(np.int64)
    split = np.array([0] * 40 + [1] * 10 + [2] * 10)
    d = ep.data.load(_write_npz(tmp_path / "a.npz", x=x, y=y, split=split))
    assert (len(d.train), len(d.val), len(d.test)) == (40, 10, 10)
    assert d.num_classes == 3 and d.input_shape == (3, 8, 8)
    np.testing.assert_array_equal(d.test.tensors[0].numpy(), x[50:])
    d2 = ep.data.load(_write_npz(tmp_path / "b.npz", x=x, y=y))
    assert (len(d2.train), len(d2.val), len(d2.test)) == (42, 9, 9)
    assert np.bincount(d2.test.tensors[1].numpy()).tolist() == [3, 3, 3]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y": np.zeros(4, np.int64)}, "missing array 'x'"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32)}, "missing array 'y'"),
        ({"x": np.zeros((4, 4), np.float32), "y": np.zeros(4, np.int64)}, "expected 4-D NCHW"),
        ({"x": np.zeros((4, 1, 2, 2), np.int32), "y": np.zeros(4, np.int64)}, "dtype int32; expected float32"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(3, np.int64)}, "'x' has 4 samples but 'y' has 3"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(4, np.float32)}, "expected 1-D int64 labels"),
        ({"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.array([0, 1, -1, 0])}, "negative labels"),
        (
            {"x": np.zeros((4, 1, 2, 2), np.float32), "y": np.zeros(4, np.int64), "split": np.array([0, 1, 5, 0])},
            r"values \[5\]",
        ),
    ],
)
def test_npz_errors_name_the_file_and_problem(tmp_path, arrays, message):
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as e:
        ep.data.load(path)
    assert str(e.value).startswith(path)


def test_npz_missing_or_corrupt(tmp_path):
    with pytest.raises(ValueError, match=r"^missing\.npz: file not found$"):
        ep.data.load("missing.npz")
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        ep.data.load(str(bad))


@pytest.mark.parametrize(
    "patch, message",
    [
        ("encrypted", "is encrypted"),  # general-purpose flag bit 0 on every member
        ("version", "zip file version"),  # "version needed to extract" 8.4, beyond zipfile's 6.3
        ("method", "compression method"),  # an unknown compression method (99)
    ],
)
def test_npz_zip_features_we_cannot_read_are_user_errors(tmp_path, patch, message):
    import struct

    path = _write_npz(tmp_path / "in.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(4, np.int64))
    data = bytearray(open(path, "rb").read())
    for sig, ver, flag, method in ((b"PK\x03\x04", 4, 6, 8), (b"PK\x01\x02", 6, 8, 10)):  # local, central
        at = data.find(sig)
        while at >= 0:
            if patch == "encrypted":
                data[at + flag] |= 1
            elif patch == "version":
                struct.pack_into("<H", data, at + ver, 84)
            else:
                struct.pack_into("<H", data, at + method, 99)
            at = data.find(sig, at + 4)
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: (not a readable|corrupt) .npz archive .*{message}"):
        ep.data.load(path)


def _png(path, size=(10, 12), color=None, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        Image.new("L", size, value).save(path)
    else:
        Image.new("RGB", size, color).save(path)


def test_image_folder_gray_and_rgb(tmp_path):
    root = tmp_path / "imgs"
    for i in range(10):
        _png(root / "cat" / f"{i}.png", value=20)
        _png(root / "dog" / f"{i}.png", value=230)
    d = ep.data.load(str(root), image_size=16)
    assert d.num_classes == 2 and d.input_shape == (1, 16, 16) and d.info["classes"] == ["cat", "dog"]
    assert len(d.train) + len(d.val) + len(d.test) == 20
    x, y = d.train.tensors
    # label 0 = cat = dark, label 1 = dog = bright; pixel scale [-1, 1]
    assert torch.allclose(x[y == 0], torch.full_like(x[y == 0], 20 / 255 * 2 - 1), atol=1e-5)
    assert (x[y == 1] > 0.7).all()
    _png(root / "dog" / "colour.png", color=(255, 0, 0))
    d3 = ep.data.load(str(root), image_size=8)
    assert d3.input_shape == (3, 8, 8)


def test_image_folder_with_train_val_subfolders(tmp_path):
    for part, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _png(tmp_path / part / c / f"{i}.png")
    d = ep.data.load(str(tmp_path), image_size=8)
    assert (len(d.train), len(d.val)) == (8, 4) and d.info["test_is_val"]


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        ep.data.load(str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        ep.data.load(str(tmp_path / "noimg"))


def test_callable_specs(tmp_path, monkeypatch):
    src = tmp_path / "mydata.py"
    src.write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset, DataLoader\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    tr = TensorDataset(torch.randn(12, 2, 4, 4, generator=g), torch.arange(12) % 3)\n"
        "    va = TensorDataset(torch.randn(6, 2, 4, 4, generator=g), torch.arange(6) % 3)\n"
        "    return DataLoader(tr, batch_size=4), va\n"
        "def three():\n"
        "    t = TensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 4]))\n"
        "    return t, t, t\n"
        "def bad():\n"
        "    return 42\n"
    )
    d = ep.data.load(f"{src}:make")
    assert isinstance(d.train, TensorDataset) and len(d.train) == 12 and d.test is d.val
    assert d.num_classes == 3 and d.input_shape == (2, 4, 4)
    monkeypatch.syspath_prepend(str(tmp_path))
    d2 = ep.data.load("mydata:three")
    assert d2.num_classes == 5 and not d2.info["test_is_val"]
    with pytest.raises(ValueError, match=r"returned int; expected \(train, val\)"):
        ep.data.load("mydata:bad")
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        ep.data.load("mydata:nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        ep.data.load("no_such_module_xyz:fn")


def test_unknown_spec_lists_forms():
    with pytest.raises(ValueError, match=r"'cifar77'.*'digits', 'file.npz', an image folder"):
        ep.data.load("cifar77")


def test_datasplits_work_with_dataloader(digits):
    xb, yb = next(iter(DataLoader(digits.val, batch_size=8)))
    assert xb.shape == (8, 1, 32, 32) and yb.dtype == torch.int64


def test_image_folder_bad_image_and_missing_pillow(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for i in range(3):
        _png(root / "a" / f"{i}.png")
        _png(root / "b" / f"{i}.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"broken.jpg: cannot read image"):
        ep.data.load(str(root), image_size=8)
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(ValueError, match="reading image folders needs Pillow: pip install pillow"):
        ep.data.load(str(root), image_size=8)

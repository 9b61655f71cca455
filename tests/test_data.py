"""MNIST loader: checksums, split, scaling, and errors that say what to do."""

import shutil

import pytest
import torch

from mesimp_lib.tasks.mnist import MNIST_FILES, _load, load_mnist, read_idx


def test_split_sizes_and_scaling():
    d = load_mnist()
    assert d.train_x.shape == (55_000, 784) and d.dev_x.shape == (5_000, 784) and d.test_x.shape == (10_000, 784)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert float(d.train_x.min()) == 0.0 and float(d.train_x.max()) == 1.0
    # dev is the *first* 5,000 training images, train the last 55,000 (published class counts)
    counts = torch.cat([d.dev_y, d.train_y]).bincount().tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cached():
    assert load_mnist() is load_mnist()


@pytest.fixture
def mnist_copy(tmp_path):
    src = load_mnist.__globals__["data_root"]() / "mnist"
    dst = tmp_path / "mnist"
    shutil.copytree(src, dst)
    _load.cache_clear()
    yield dst
    _load.cache_clear()


def test_missing_file_names_it_and_says_what_to_do(mnist_copy):
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.gz is missing.*git checkout"):
        load_mnist(mnist_copy)


def test_corrupted_file_detected_by_sha256(mnist_copy):
    p = mnist_copy / "train-labels-idx1-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[100] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz is corrupted: sha256 .* expected"):
        load_mnist(mnist_copy)


def test_read_idx_rejects_non_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a valid gzip"):
        read_idx(p)


def test_env_override(monkeypatch, mnist_copy):
    monkeypatch.setenv("MESIMP_DATA_DIR", str(mnist_copy.parent))
    assert len(load_mnist().test_y) == 10_000
    assert set(MNIST_FILES) == {p.name for p in mnist_copy.iterdir()}

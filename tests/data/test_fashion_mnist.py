"""Tests for vgg.data.fashion_mnist: the split, the IDX reader, the download from mirrors (and
the shared checked download of vgg.files it goes through)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg import files
from vgg.data import fashion_mnist as FM
from vgg.data import open_dataset

FMNIST = FM.find_fashion_mnist()
needs_fmnist = pytest.mark.skipif(FMNIST is None, reason="Fashion-MNIST files not installed")


@needs_fmnist
def test_fashion_mnist_splits():
    train = open_dataset("fashion-mnist", "train")
    val = open_dataset("fashion-mnist", "val")
    test = open_dataset("fashion-mnist", "test")
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.classes == val.classes == test.classes
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.channels == 1 and train.images.dtype == torch.uint8
    assert train.images.shape[1:] == (1, 28, 28)
    # train and val partition the official 60,000: no image in both, and together all of them.
    x_all, y_all, _, _ = FM.load_fashion_mnist()
    tr_idx, va_idx = FM.split_fashion_mnist(5000, 0)
    assert len(np.intersect1d(tr_idx, va_idx)) == 0 and len(np.union1d(tr_idx, va_idx)) == 60000
    assert torch.equal(val.images[:, 0], torch.from_numpy(x_all[va_idx]))
    # Every class is present in val and roughly balanced (6,000 of each in the official train set).
    counts = torch.bincount(val.labels, minlength=10)
    assert counts.min() > 400
    # The split is fixed by the seed; another seed gives another split; val_size is honoured.
    assert torch.equal(open_dataset("fashion-mnist", "val").labels, val.labels)
    assert not torch.equal(open_dataset("fashion-mnist", "val", seed=1).labels, val.labels)
    assert len(open_dataset("fashion-mnist", "val", val_size=1000)) == 1000
    small = open_dataset("fashion-mnist", "train", limit=100)
    assert len(small) == 100 and torch.equal(small.images, train.images[:100])


@needs_fmnist
def test_fashion_mnist_content_matches_idx_files():
    # The first official test image is an ankle boot (label 9), the second a pullover (2).
    test = open_dataset("fashion-mnist", "test", limit=2)
    assert test.labels.tolist() == [9, 2]
    raw = FM.read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(test.images[:, 0], torch.from_numpy(raw[:2].copy()))


def test_read_idx_rejects_bad_files(tmp_path):
    good = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    (tmp_path / "ok.gz").write_bytes(gzip.compress(good))
    assert FM.read_idx(tmp_path / "ok.gz").tolist() == [1, 2, 3]
    (tmp_path / "short.gz").write_bytes(gzip.compress(good[:-1]))
    with pytest.raises(ValueError, match="short.gz: IDX header says"):
        FM.read_idx(tmp_path / "short.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="cut.gz: cannot read IDX"):
        FM.read_idx(tmp_path / "cut.gz")
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + good[4:]))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        FM.read_idx(tmp_path / "magic.gz")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises more bytes than it sends (a cut transfer)."""

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path[len("/short/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_sha256_and_length(server, tmp_path):
    served, url = server
    payload = os.urandom(5000)
    (served / "f.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "f.bin"
    assert files.download(url + "f.bin", dest, sha256=sha, size=5000, progress=False).read_bytes() == payload
    dest.unlink()
    with pytest.raises(ValueError, match="SHA-256 .* does not match"):
        files.download(url + "f.bin", dest, sha256="0" * 64, progress=False)
    (served / "short.bin").write_bytes(payload[:3000])  # a truncated copy on the server
    with pytest.raises(ValueError, match="has 3000 bytes, expected 5000"):
        files.download(url + "short.bin", dest, sha256=sha, size=5000, progress=False)
    with pytest.raises(ValueError, match="cut short"):
        files.download(url + "short/f.bin", dest, sha256=sha, size=5000, progress=False)
    with pytest.raises(ValueError, match="404"):
        files.download(url + "missing.bin", dest, sha256=sha, size=5000, progress=False)
    # Nothing half-written is left behind to be mistaken for the file.
    assert list((tmp_path / "cache").iterdir()) == []


# The canonical gzip files differ from Debian's only in their header (name and time), so the test can
# rebuild them exactly and check them against the MD5s the dataset publishes.
CANONICAL = {"train-images-idx3-ubyte": (1504176606, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
             "train-labels-idx1-ubyte": (1504176606, "25c81989df183df01b3e8a0aad5dffbe"),
             "t10k-images-idx3-ubyte": (1504176627, "bef4ecab320f06d8554ea6380940ec79"),
             "t10k-labels-idx1-ubyte": (1504176627, "bb300cfdad3c16e7a12a480ee83cd310")}


@pytest.mark.skipif(not FM._has_fashion_mnist(FM.FASHION_MNIST_SYSTEM_DIR), reason="needs Debian's files")
def test_fashion_mnist_download_from_mirrors(server, tmp_path, monkeypatch):
    served, url = server
    good = served / "good"
    good.mkdir()
    for name, (mtime, md5) in CANONICAL.items():
        body = (FM.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz").read_bytes()[10:]
        data = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + name.encode() + b"\0" + body
        assert hashlib.md5(data).hexdigest() == md5
        (good / f"{name}.gz").write_bytes(data)
    bad = served / "bad"  # a mirror with one corrupted file and one truncated file
    bad.mkdir()
    for name in CANONICAL:
        data = (good / f"{name}.gz").read_bytes()
        if name.startswith("t10k-labels"):
            data = data[:100] + bytes(10) + data[110:]
        elif name.startswith("t10k-images"):
            data = data[: len(data) // 2]
        (bad / f"{name}.gz").write_bytes(data)
    monkeypatch.setenv("VGG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VGG_DATA", raising=False)
    monkeypatch.setattr(FM, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian-package")
    monkeypatch.setattr(FM, "FASHION_MNIST_MIRRORS", (url + "nothing-here/", url + "bad/", url + "good/"))
    assert FM.find_fashion_mnist() is None
    test = open_dataset("fashion-mnist", "test", limit=3)  # downloads into $VGG_HOME, then reads
    assert test.labels.tolist() == [9, 2, 1]
    cache = tmp_path / "home" / "fashion-mnist"
    assert FM.find_fashion_mnist() == cache
    for name, size, sha in FM.FASHION_MNIST_FILES.values():
        assert (cache / name).stat().st_size == size and files.sha256_file(cache / name) == sha
    # Only bad mirrors: a clear error listing every failure; a file already verified is kept.
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz:(.|\n)*404(.|\n)*does not match"):
        FM.download_fashion_mnist(mirrors=(url + "nothing-here/", url + "bad/"))
    assert (cache / "train-images-idx3-ubyte.gz").is_file()
    monkeypatch.setattr(FM, "FASHION_MNIST_MIRRORS", (url + "nothing-here/",))
    with pytest.raises(ValueError, match=r"not in \$VGG_DATA.*downloading them failed"):
        open_dataset("fashion-mnist", "train")
    # $VGG_DATA is looked at first, as a folder or with a fashion-mnist subfolder.
    monkeypatch.setenv("VGG_DATA", str(served))
    assert FM.find_fashion_mnist() is None
    (served / "fashion-mnist").symlink_to(good)
    assert FM.find_fashion_mnist() == served / "fashion-mnist"

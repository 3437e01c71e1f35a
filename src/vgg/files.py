"""Files: atomic writes, SHA-256, the download cache and checked downloads.

One implementation of each, shared by the data sets (Fashion-MNIST's files) and the weights
(published checkpoints), so that both keep the same guarantees: nothing half-written ever looks
complete, and nothing downloaded is used before its hash is checked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


def cache_root() -> Path:
    """Where downloads are kept: ``$VGG_HOME``, default ``~/.cache/vgg`` (``~`` expanded in both)."""
    return Path(os.environ.get("VGG_HOME") or "~/.cache/vgg").expanduser()


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, as lowercase hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn one; a failed
    ``write`` leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def download(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file that replaces ``dest`` only once the
    transfer is complete (its Content-Length, and ``size`` when given) and its SHA-256 starts with
    ``sha256`` (a whole digest, or a prefix such as the one in torchvision's file names). A progress
    bar goes to stderr. Any failure is a ValueError naming the URL, and leaves no file behind.

    Not ``torch.hub.download_url_to_file``: it has no timeout (a stalled server hangs the run), does
    not notice a transfer cut short when no hash is given, and raises the transport's raw errors.
    """
    dest = Path(dest)

    def write(tmp: Path) -> None:
        digest, got, total = hashlib.sha256(), 0, None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                          disable=not progress, file=sys.stderr) as bar:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except http.client.IncompleteRead as e:  # the server closed early
            raise ValueError(f"download of {url} was cut short after {got + len(e.partial)} of "
                             f"{total} bytes") from e
        except urllib.error.HTTPError as e:
            raise ValueError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise ValueError(f"could not download {url}: {reason} (a local file path works "
                             "offline)") from e
        if total is not None and got != total:
            raise ValueError(f"download of {url} was cut short after {got} of {total} bytes")
        if size is not None and got != size:
            raise ValueError(f"download of {url} has {got} bytes, expected {size}: truncated, or "
                             "not the published file")
        if sha256 and not digest.hexdigest().startswith(sha256.lower()):
            raise ValueError(f"download of {url} has SHA-256 {digest.hexdigest()}, which does not "
                             f"match {sha256}: corrupt, or not the published file")

    return atomic_write(dest, write)

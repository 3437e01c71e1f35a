"""Published weights as records, and the download cache they go through.

As torchvision's weight enums do, each published file is one record (:class:`PublishedWeights`):
where it is and its SHA-256 prefix, the network of Table 1 it holds, the preprocessing it expects,
its classes, and the accuracy its publisher reports with the protocol that figure was measured
under. ``load_any("vgg16")`` takes all of these from the record; nothing is guessed from the file
(a 1000-way head is not taken to be ImageNet's). ``vgg weights`` lists the records.

Downloads are SHA-256-checked and kept in ``cache_root()/weights/<host>/<file name>``.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..files import cache_root, download, sha256_file
from ..models import TORCHVISION_NORMALIZATION, VGG, Normalization, parse_arch
from .foreign import load_weight_file

TORCHVISION_URL = "https://download.pytorch.org/models/"
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # torch.hub's HASH_REGEX, at least 6 digits


# -- class lists ----------------------------------------------------------------------------------------

def imagenet_classes() -> list[str]:
    """The 1000 ImageNet (ILSVRC-2012) class names in the standard index order (281 is "tabby")."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


CLASS_LISTS: dict[str, Callable[[], list[str]]] = {"imagenet-1k": imagenet_classes}


def class_list(classes: str | Sequence[str] | None) -> list[str] | None:
    """Class names given as a list, or by the name of a known list (``"imagenet-1k"``)."""
    if isinstance(classes, str):
        if classes not in CLASS_LISTS:
            raise ValueError(f"unknown class list {classes!r}; known: {', '.join(CLASS_LISTS)}")
        return CLASS_LISTS[classes]()
    return None if classes is None else list(classes)


# -- the records ------------------------------------------------------------------------------------------

# torchvision's ImageClassification preset for its VGG weights (torchvision/models/vgg.py).
CENTRE_CROP_224 = ("ILSVRC-2012 val, one 224 x 224 centre crop of the image resized to 256 on its "
                   "shorter side")


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file: where it is, what it holds, how well its publisher says it does."""

    name: str  # what load_any and torch.hub take: vgg16, vgg16_bn, ...
    url: str
    sha256_prefix: str  # the first hex digits of the file's SHA-256, as in its name (torch.hub's check)
    arch: str  # ours (create_model's name) for the network of Table 1 it holds
    normalization: Normalization  # the preprocessing the weights expect
    classes: str  # a key of CLASS_LISTS, in the order of the outputs
    top1: float  # accuracy %, as the publisher reports it, under ``protocol``
    top5: float
    protocol: str
    source: str = "torchvision"  # the publisher, and the file's format (one of foreign.SOURCES)
    size_mib: float | None = None  # the file's size as the publisher reports it

    @property
    def file_name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name

    def class_names(self) -> list[str]:
        """The names of the classes, in the order of the outputs."""
        return CLASS_LISTS[self.classes]()

    def to_dict(self) -> dict:
        """The record as plain JSON types."""
        d = dataclasses.asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return d


def _torchvision(name: str, file: str, sha256_prefix: str, top1: float, top5: float,
                 size_mib: float) -> PublishedWeights:
    return PublishedWeights(name=name, url=TORCHVISION_URL + file, sha256_prefix=sha256_prefix, arch=name,
                            normalization=TORCHVISION_NORMALIZATION, classes="imagenet-1k", top1=top1,
                            top5=top5, protocol=CENTRE_CROP_224, source="torchvision", size_mib=size_mib)


# torchvision's ImageNet weights (IMAGENET1K_V1): the accuracy is SPEC section 4's (torchvision's
# _metrics, rounded to 2 decimals), the size torchvision's _file_size. The hex digits in each file name
# are the first digits of the file's SHA-256; as torch.hub's check_hash does, a download is accepted
# only if its SHA-256 starts with them.
PUBLISHED: dict[str, PublishedWeights] = {w.name: w for w in (
    _torchvision("vgg11", "vgg11-8a719046.pth", "8a719046", 69.02, 88.63, 506.84),
    _torchvision("vgg11_bn", "vgg11_bn-6002323d.pth", "6002323d", 70.37, 89.81, 506.881),
    _torchvision("vgg13", "vgg13-19584684.pth", "19584684", 69.93, 89.25, 507.545),
    _torchvision("vgg13_bn", "vgg13_bn-abd245e5.pth", "abd245e5", 71.59, 90.37, 507.59),
    _torchvision("vgg16", "vgg16-397923af.pth", "397923af", 71.59, 90.38, 527.796),
    _torchvision("vgg16_bn", "vgg16_bn-6c64b313.pth", "6c64b313", 73.36, 91.52, 527.866),
    _torchvision("vgg19", "vgg19-dcbb9e9d.pth", "dcbb9e9d", 72.38, 90.88, 548.051),
    _torchvision("vgg19_bn", "vgg19_bn-c79401a0.pth", "c79401a0", 74.22, 91.84, 548.143),
)}


def published(name: str) -> PublishedWeights:
    """The record of the published weights called ``name`` (``vgg16``, ``vgg19_bn``, ...)."""
    record = PUBLISHED.get(name.strip().lower())
    if record is None:
        raise ValueError(f"no published weights are called {name!r}; published: {', '.join(PUBLISHED)}")
    return record


# -- the download cache -------------------------------------------------------------------------------------

def cached_download(url: str, *, sha256: str | None = None, progress: bool = True) -> Path:
    """``url`` in the cache ``$VGG_HOME/weights/<host>/<file name>``, downloaded on first use.
    ``sha256`` (a digest or its first digits; default the ``-<hex>.`` hash of a torchvision-style file
    name) is checked, also when the file is found cached."""
    parsed = urllib.parse.urlparse(url)
    name = Path(parsed.path).name
    if not name:
        raise ValueError(f"URL {url} names no file")
    dest = cache_root() / "weights" / (parsed.netloc.replace(":", "_") or "local") / name
    if sha256 is None:
        m = HASH_IN_NAME.search(name)
        sha256 = m.group(1) if m else None
    if dest.is_file():
        if sha256 is None or sha256_file(dest).startswith(sha256.lower()):
            return dest
        warnings.warn(f"cached {dest} does not match the hash in its name; downloading it again",
                      stacklevel=2)
    return download(url, dest, sha256=sha256, progress=progress)


def local_record(path: Path) -> PublishedWeights | None:
    """The record of a local file that is a published one: its name and its SHA-256 say so."""
    for w in PUBLISHED.values():
        if path.is_file() and path.name == w.file_name:
            if sha256_file(path).startswith(w.sha256_prefix):
                return w
            warnings.warn(f"{path} has the name of {w.source}'s {w.name} weights but not their SHA-256; "
                          "loading it as an unknown file", stacklevel=2)
    return None


def resolve_spec(spec: str, progress: bool = True) -> tuple[Path, PublishedWeights | None]:
    """A local path as is; a published name (``vgg16``, ``vgg16_bn`` ...) or an http(s) URL through
    the download cache. Returns the file and, for published weights (by name or URL, or a local copy
    with the published name and hash), their record."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, local_record(path)
    record = PUBLISHED.get(spec.strip().lower()) or next(
        (w for w in PUBLISHED.values() if w.url == spec.strip()), None)
    if record is not None:
        return cached_download(record.url, sha256=record.sha256_prefix, progress=progress), record
    if re.match(r"https?://", spec):
        return cached_download(spec, progress=progress), None
    raise FileNotFoundError(f"{spec} is neither a file nor a run folder, nor a known name "
                            f"({', '.join(PUBLISHED)}), nor an http(s) URL")


def load_any(spec: str | Path, *, device: str | torch.device = "cpu", arch: str | None = None,
             source: str = "auto", classes: str | Sequence[str] | None = None,
             progress: bool = True) -> VGG:
    """Any weights as a ready eval-mode model with its preprocessing (and class names, when known).

    ``spec``: one of our checkpoints or a run folder; a foreign weight file (torchvision ``.pth``,
    timm ``.pth``/``.safetensors``, Keras ``.h5``) converted on the fly, its format told by its
    keys (or forced with ``source``); a published name (``vgg16``, ``vgg19_bn``, ...: see
    :data:`PUBLISHED`), whose record gives the URL, SHA-256, architecture, preprocessing and classes,
    downloaded once into the cache under ``$VGG_HOME``; an http(s) URL.
    ``arch``: the architecture the weights must fit (inferred from the shapes otherwise).
    ``classes``: class names for the outputs, or a known list's name (``"imagenet-1k"``); a foreign
    file without a record has none otherwise.
    """
    path, record = resolve_spec(str(spec), progress)
    names = class_list(classes)
    if record is None:
        model = load_weight_file(path, source=source, arch=arch, origin=str(spec), classes=names)
        return model.to(device).eval()
    if source not in ("auto", record.source):
        raise ValueError(f"{spec} names {record.source}'s weights, not {source} weights")
    if arch is not None and parse_arch(arch) != parse_arch(record.arch):
        raise ValueError(f"{spec} weights do not fit --arch {arch}")
    model = load_weight_file(path, source=record.source, arch=record.arch, origin=str(spec),
                             classes=record.class_names() if names is None else names,
                             normalization=record.normalization)
    return model.to(device).eval()

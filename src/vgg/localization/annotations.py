"""Ground-truth boxes from files (App. A): ImageNet's PASCAL VOC XML, Kaggle's CSV, a plain CSV.

Every reader returns ``(annotations, problems)``: ``annotations`` maps an image key to its list of
:class:`Annotation` ``(label, box, where)`` (class name, ``(x1, y1, x2, y2)`` in pixels, and the
``file:line`` it came from), ``problems`` lists ``(where, reason)`` for each entry skipped. With
``strict=True`` a reader raises one ValueError listing every problem instead.

Coordinates are read as they are written, as pixel edges (see :mod:`.boxes`): ``xmin``..``xmax``.
The VOC and ILSVRC devkits count inclusive pixels (width ``xmax - xmin + 1``, 1-based); reading them as
edges moves a box by at most one pixel, and keeps every in-image box in ``[0, W] x [0, H]``.

The formats:

- PASCAL VOC XML, ImageNet's ``Annotations/CLS-LOC/{train/<wnid>/<id>,val/<id>}.xml``: one file per
  image, ``<size><width>/<height>``, one ``<object>`` per box with the class in ``<name>`` and
  ``<bndbox><xmin>/<ymin>/<xmax>/<ymax>``. The key is the XML's path below the folder read, without
  ``.xml`` (``n01440764/n01440764_10026``, ``ILSVRC2012_val_00000001``).
- Kaggle's ``LOC_train_solution.csv`` / ``LOC_val_solution.csv``: header ``ImageId,PredictionString``,
  one row per image, the string repeating ``synset x_min y_min x_max y_max``. The key is the ImageId.
- A plain CSV ``file,xmin,ymin,xmax,ymax[,class]``, one row per box (several rows for several
  objects), header optional (when present it names the columns, in any order; ``file`` may also be
  ``filename``/``image``, ``class`` may be ``label``/``name``). ``file`` is the image's path below
  the split folder, its name, or its name without extension. Without a class column the label is
  None: :func:`match_images` takes the image's class folder.

Where a split's boxes are (:func:`find_annotations`): ``--boxes PATH`` (a file or an XML folder) for
that split, else the one of these found beside the split's class folders of ``root/<split>/``:
``root/<split>/boxes.csv``; ``root/Annotations/<split>/`` or ``root/Annotations/CLS-LOC/<split>/``
(ImageNet's layout); ``root/LOC_<split>_solution.csv`` (Kaggle's file as downloaded).
"""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple
from xml.parsers import expat

from PIL import Image

__all__ = ["Annotation", "find_annotations", "image_sizes", "load_boxes", "match_images",
           "read_annotations", "read_boxes_csv", "read_kaggle_csv", "read_voc"]

Box = tuple[float, float, float, float]
Problem = tuple[str, str]


class Annotation(NamedTuple):
    """One object: class name (None when the file has none), box (x1, y1, x2, y2) in pixels, and
    where it was read (``file:line``)."""

    label: str | None
    box: Box
    where: str


Annotations = dict[str, list[Annotation]]


def _raise_if(strict: bool, problems: list[Problem], what: str) -> None:
    if strict and problems:
        lines = "\n".join(f"  {where}: {reason}" for where, reason in problems)
        raise ValueError(f"{len(problems)} problem(s) in {what}:\n{lines}")


def _box(values: Sequence[str], where: str, classes, label, problems: list[Problem],
         size: tuple[float, float] | None = None) -> Annotation | None:
    """A checked annotation from four coordinate strings, or None with the reason in ``problems``."""
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except (TypeError, ValueError):
        problems.append((where, f"coordinates must be 4 numbers, got {list(values)}"))
        return None
    if classes is not None and label is not None and label not in classes:
        problems.append((where, f"class {label!r} is not in the class list"))
        return None
    if not (x2 > x1 and y2 > y1):
        problems.append((where, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has zero or negative area"))
        return None
    problem = _outside((x1, y1, x2, y2), size)
    if problem:
        problems.append((where, problem))
        return None
    return Annotation(label, (x1, y1, x2, y2), where)


def _outside(box: Box, size: tuple[float, float] | None) -> str | None:
    x1, y1, x2, y2 = box
    if x1 < 0 or y1 < 0 or (size is not None and (x2 > size[0] or y2 > size[1])):
        inside = f"the {size[0]:g}x{size[1]:g} image" if size is not None else "the image"
        return f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside {inside}"
    return None


# -- PASCAL VOC XML ------------------------------------------------------------------------------------

def _parse_xml(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """ElementTree of ``path`` with each element's line (by id), for messages that name the line."""
    parser = expat.ParserCreate()
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}

    def start(tag, attrs):
        lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    with open(path, "rb") as f:
        parser.ParseFile(f)
    return builder.close(), lines


def _text(el: ET.Element | None, tag: str) -> str | None:
    child = el.find(tag) if el is not None else None
    return child.text.strip() if child is not None and child.text else None


def _read_one_xml(path: Path, key: str, classes, out: Annotations, problems: list[Problem]) -> None:
    try:
        root, lines = _parse_xml(path)
    except expat.ExpatError as e:
        problems.append((f"{path}:{e.lineno}", f"malformed XML: {expat.ErrorString(e.code)}"))
        return
    except OSError as e:
        problems.append((str(path), f"cannot read: {e}"))
        return
    size_el = root.find("size")
    try:
        size = (float(_text(size_el, "width")), float(_text(size_el, "height")))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        where = f"{path}:{lines.get(id(size_el), lines.get(id(root), 1))}"
        problems.append((where, "no <size> with numeric <width> and <height>"))
        return
    objects = out.setdefault(key, [])
    for obj in root.iter("object"):
        where = f"{path}:{lines.get(id(obj), 0)}"
        name, bndbox = _text(obj, "name"), obj.find("bndbox")
        if name is None or bndbox is None:
            problems.append((where, "<object> without <name> or <bndbox>"))
            continue
        values = [_text(bndbox, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        ann = _box(values, where, classes, name, problems, size)  # type: ignore[arg-type]
        if ann is not None:
            objects.append(ann)


def read_voc(path: str | Path, *, classes: Iterable[str] | None = None,
             strict: bool = False) -> tuple[Annotations, list[Problem]]:
    """PASCAL VOC XML annotations: one ``.xml`` file, or every ``*.xml`` below a folder (ImageNet's
    ``Annotations/CLS-LOC/<split>``). Boxes are checked against the file's ``<size>``."""
    path = Path(path)
    classes = set(classes) if classes is not None else None
    out: Annotations = {}
    problems: list[Problem] = []
    if path.is_dir():
        files = sorted(Path(d) / f for d, _, fs in os.walk(path, followlinks=True) for f in fs
                       if f.lower().endswith(".xml") and not f.startswith("."))
        if not files:
            problems.append((str(path), "no .xml files in this folder"))
        for f in files:
            _read_one_xml(f, f.relative_to(path).with_suffix("").as_posix(), classes, out, problems)
    elif path.is_file():
        _read_one_xml(path, path.stem, classes, out, problems)
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    _raise_if(strict, problems, str(path))
    return out, problems


# -- CSVs ----------------------------------------------------------------------------------------------

def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [(reader.line_num, row) for reader in [csv.reader(f)] for row in reader
                if any(cell.strip() for cell in row)]


def read_kaggle_csv(path: str | Path, *, classes: Iterable[str] | None = None,
                    strict: bool = False) -> tuple[Annotations, list[Problem]]:
    """Kaggle's ``LOC_{train,val}_solution.csv``: ``ImageId,PredictionString``, the string repeating
    ``synset x_min y_min x_max y_max``. Image sizes are not in the file: see :func:`match_images`."""
    path = Path(path)
    classes = set(classes) if classes is not None else None
    out: Annotations = {}
    problems: list[Problem] = []
    rows = _csv_rows(path)
    if not rows or [c.strip() for c in rows[0][1]] != ["ImageId", "PredictionString"]:
        got = ",".join(rows[0][1]) if rows else "an empty file"
        problems.append((f"{path}:{rows[0][0] if rows else 1}",
                         f"expected the header ImageId,PredictionString, got {got}"))
        rows = []
    rows = rows[1:]
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != 2:
            problems.append((where, f"expected 2 fields (ImageId,PredictionString), got {len(row)}"))
            continue
        key, tokens = row[0].strip(), row[1].split()
        if not key or not tokens or len(tokens) % 5:
            problems.append((where, f"PredictionString must repeat 'synset x_min y_min x_max y_max', "
                                    f"got {len(tokens)} tokens"))
            continue
        objects = out.setdefault(key, [])
        for i in range(0, len(tokens), 5):
            ann = _box(tokens[i + 1:i + 5], where, classes, tokens[i], problems)
            if ann is not None:
                objects.append(ann)
    _raise_if(strict, problems, str(path))
    return out, problems


_COLUMNS = {"file": "file", "filename": "file", "image": "file", "path": "file",
            "xmin": "xmin", "ymin": "ymin", "xmax": "xmax", "ymax": "ymax",
            "class": "class", "label": "class", "name": "class"}


def read_boxes_csv(path: str | Path, *, classes: Iterable[str] | None = None,
                   strict: bool = False) -> tuple[Annotations, list[Problem]]:
    """A plain CSV ``file,xmin,ymin,xmax,ymax[,class]``, one box a row, header optional (see module)."""
    path = Path(path)
    classes = set(classes) if classes is not None else None
    out: Annotations = {}
    problems: list[Problem] = []
    rows = _csv_rows(path)
    order = ["file", "xmin", "ymin", "xmax", "ymax", "class"]
    header = False
    if rows and len(rows[0][1]) > 1 and not _is_number(rows[0][1][1]):
        names = [_COLUMNS.get(c.strip().lower()) for c in rows[0][1]]
        missing = [c for c in order[:5] if c not in names]
        if missing or None in names or len(set(names)) != len(names):
            problems.append((f"{path}:{rows[0][0]}", f"header {rows[0][1]} must name file, xmin, ymin, "
                                                     f"xmax, ymax and optionally class, once each"))
            rows = []
        else:
            order, header = names, True  # type: ignore[assignment]
            rows = rows[1:]
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != len(order) if header else len(row) not in (5, 6):
            problems.append((where, f"expected file,xmin,ymin,xmax,ymax[,class], got {len(row)} fields"))
            continue
        fields = dict(zip(order, (c.strip() for c in row)))
        if not fields["file"]:
            problems.append((where, "empty file name"))
            continue
        label = fields.get("class") or None
        ann = _box([fields["xmin"], fields["ymin"], fields["xmax"], fields["ymax"]], where, classes,
                   label, problems)
        objects = out.setdefault(Path(fields["file"]).as_posix(), [])
        if ann is not None:
            objects.append(ann)
    _raise_if(strict, problems, str(path))
    return out, problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_annotations(path: str | Path, *, classes: Iterable[str] | None = None,
                     strict: bool = False) -> tuple[Annotations, list[Problem]]:
    """Any of the three formats: a folder or ``.xml`` file is VOC; a ``.csv`` whose header is
    ``ImageId,PredictionString`` is Kaggle's, any other ``.csv`` the plain one."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".xml":
        return read_voc(path, classes=classes, strict=strict)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotation file or folder")
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline().strip().replace(" ", "")
    if first.startswith("ImageId,PredictionString"):
        return read_kaggle_csv(path, classes=classes, strict=strict)
    return read_boxes_csv(path, classes=classes, strict=strict)


def find_annotations(root: str | Path, split: str, boxes: str | Path | None = None) -> Path | None:
    """The annotation file or folder of ``root/<split>/`` (see the module for the places looked at),
    or None when there is none. ``boxes`` (the ``--boxes`` option) wins; two candidates found is an
    error naming both."""
    if boxes is not None:
        path = Path(boxes).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such annotation file or folder (--boxes)")
        return path
    root = Path(root).expanduser()
    candidates = [root / split / "boxes.csv", root / "Annotations" / split,
                  root / "Annotations" / "CLS-LOC" / split, root / f"LOC_{split}_solution.csv"]
    found = [p for p in candidates if p.exists()]
    if len(found) > 1:
        raise ValueError(f"several box annotations for {root / split}: {', '.join(map(str, found))}; "
                         f"name one with --boxes")
    return found[0] if found else None


# -- matching annotations to the images ----------------------------------------------------------------

def image_sizes(paths: Sequence[str | Path]) -> list[tuple[int, int] | None]:
    """(width, height) of each image from its header (Pillow; the pixels are not decoded), None for a
    file Pillow cannot open. Sizes as stored, before any EXIF rotation."""
    sizes: list[tuple[int, int] | None] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except (OSError, ValueError):
            sizes.append(None)
    return sizes


def _image_keys(path: str, root: Path | None) -> list[str]:
    p = Path(path)
    keys = []
    if root is not None:
        try:
            rel = p.relative_to(root)
            keys += [rel.as_posix(), rel.with_suffix("").as_posix()]
        except ValueError:
            pass
    return keys + [p.name, p.stem]


def match_images(annotations: Annotations, paths: Sequence[str | Path], *, root: str | Path | None = None,
                 labels: Sequence[str] | None = None, sizes: Sequence[tuple[int, int] | None] | None = None,
                 strict: bool = False) -> tuple[list[list[Annotation]], list[Problem]]:
    """Each image's annotations, in the order of ``paths``, and the problems found.

    An image is matched by its path below ``root`` (with or without extension), its file name or its
    name without extension, in that order. Problems: an image with no box (none in the file, or all
    skipped), a key matching no image, a key matching several images, and with ``sizes`` ((width,
    height) per image, e.g. from :func:`image_sizes`) a box outside its image. ``labels`` (each image's
    class name) fills in the label of boxes read without one. Bad entries are skipped.
    """
    root_path = Path(root) if root is not None else None
    by_key: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        for key in dict.fromkeys(_image_keys(str(p), root_path)):
            by_key.setdefault(key, []).append(i)
    out: list[list[Annotation]] = [[] for _ in paths]
    seen = [False] * len(paths)
    problems: list[Problem] = []
    for key, objects in annotations.items():
        where = objects[0].where if objects else key
        hits = by_key.get(Path(key).as_posix())
        if not hits:
            problems.append((where, f"annotation for {key!r}, which is not among the images"))
            continue
        if len(hits) > 1:
            names = ", ".join(str(paths[i]) for i in hits[:3])
            problems.append((where, f"annotation for {key!r} matches {len(hits)} images ({names}); skipped"))
            continue
        i = hits[0]
        seen[i] = True
        for ann in objects:
            if sizes is not None and sizes[i] is not None:
                problem = _outside(ann.box, sizes[i])
                if problem:
                    problems.append((ann.where, f"{problem} ({paths[i]})"))
                    continue
            if ann.label is None and labels is not None:
                ann = ann._replace(label=labels[i])
            out[i].append(ann)
    for i, p in enumerate(paths):
        if not out[i]:
            reason = "no valid box for this image" if seen[i] else "no box annotation for this image"
            problems.append((str(p), reason))
    _raise_if(strict, problems, "the box annotations")
    return out, problems


def load_boxes(root: str | Path, split: str, paths: Sequence[str | Path], *,
               classes: Iterable[str] | None = None, labels: Sequence[str] | None = None,
               boxes: str | Path | None = None, check_sizes: bool = False,
               strict: bool = False) -> tuple[list[list[Annotation]], list[Problem]]:
    """A folder split's boxes, one list per image of ``paths`` (files of ``root/<split>/``):
    :func:`find_annotations`, :func:`read_annotations`, :func:`match_images` (``check_sizes``: read each
    image's header to check boxes against it). ``strict``: one ValueError listing every problem of
    reading and matching; otherwise the bad entries are skipped and returned as (where, reason)."""
    found = find_annotations(root, split, boxes)
    if found is None:
        raise FileNotFoundError(f"no box annotations for {Path(root) / split}: give --boxes PATH, or "
                                f"put boxes.csv in it, Annotations/{split}/ or LOC_{split}_solution.csv "
                                f"beside it")
    annotations, problems = read_annotations(found, classes=classes)
    sizes = image_sizes(paths) if check_sizes else None
    matched, more = match_images(annotations, paths, root=Path(root) / split, labels=labels, sizes=sizes)
    problems += more
    _raise_if(strict, problems, str(found))
    return matched, problems

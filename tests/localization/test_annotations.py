"""vgg.localization.annotations: each format read from files in its published layout, every bad
annotation reported with its file and line (strict raises them all; the default skips them)."""

import re

import pytest
from PIL import Image

from vgg.localization import annotations as A

WNID_A, WNID_B = "n01440764", "n01443537"
CLASSES = [WNID_A, WNID_B]


def voc_xml(filename, folder, width, height, objects):
    """An ImageNet CLS-LOC annotation, laid out as the files ImageNet ships."""
    parts = [f"""<annotation>
\t<folder>{folder}</folder>
\t<filename>{filename}</filename>
\t<source>
\t\t<database>ILSVRC_2012</database>
\t</source>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
"""]
    for name, (x1, y1, x2, y2) in objects:
        parts.append(f"""\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x1}</xmin>
\t\t\t<ymin>{y1}</ymin>
\t\t\t<xmax>{x2}</xmax>
\t\t\t<ymax>{y2}</ymax>
\t\t</bndbox>
\t</object>
""")
    return "".join(parts) + "</annotation>\n"


@pytest.fixture
def imagenet(tmp_path):
    """A tiny ImageNet-shaped root: train/<wnid>/<id>.JPEG, val/<wnid>/<id>.JPEG, and
    Annotations/CLS-LOC/{train/<wnid>/<id>.xml, val/<id>.xml}."""
    root = tmp_path / "imagenet"
    images = {
        f"train/{WNID_A}/{WNID_A}_10026.JPEG": (250, 200),
        f"train/{WNID_A}/{WNID_A}_10027.JPEG": (120, 90),
        f"train/{WNID_B}/{WNID_B}_5.JPEG": (64, 64),
        f"val/{WNID_A}/ILSVRC2012_val_00000001.JPEG": (300, 200),
        f"val/{WNID_B}/ILSVRC2012_val_00000002.JPEG": (100, 160),
    }
    for rel, size in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 30, 10)).save(root / rel, format="JPEG")
    ann = root / "Annotations" / "CLS-LOC"
    xmls = {
        f"train/{WNID_A}/{WNID_A}_10026.xml": (WNID_A, 250, 200, [(WNID_A, (11, 20, 190, 180)),
                                                                   (WNID_A, (0, 0, 250, 100))]),
        f"train/{WNID_A}/{WNID_A}_10027.xml": (WNID_A, 120, 90, [(WNID_A, (5, 5, 60, 80))]),
        f"train/{WNID_B}/{WNID_B}_5.xml": (WNID_B, 64, 64, [(WNID_B, (1, 2, 63, 64))]),
        "val/ILSVRC2012_val_00000001.xml": ("val", 300, 200, [(WNID_A, (30, 40, 290, 199))]),
        "val/ILSVRC2012_val_00000002.xml": ("val", 100, 160, [(WNID_B, (10, 10, 90, 150)),
                                                               (WNID_B, (50, 60, 70, 80))]),
    }
    for rel, (folder, w, h, objects) in xmls.items():
        (ann / rel).parent.mkdir(parents=True, exist_ok=True)
        (ann / rel).write_text(voc_xml(rel.rsplit("/", 1)[1][:-4], folder, w, h, objects))
    return root


def images_of(root, split):
    return sorted(str(p) for p in (root / split).rglob("*.JPEG"))


# -- the three formats ----------------------------------------------------------------------------------

def test_voc_folder(imagenet):
    got, problems = A.read_voc(imagenet / "Annotations" / "CLS-LOC" / "train", classes=CLASSES, strict=True)
    assert problems == []
    assert sorted(got) == [f"{WNID_A}/{WNID_A}_10026", f"{WNID_A}/{WNID_A}_10027", f"{WNID_B}/{WNID_B}_5"]
    first = got[f"{WNID_A}/{WNID_A}_10026"]
    assert [(a.label, a.box) for a in first] == [(WNID_A, (11.0, 20.0, 190.0, 180.0)),
                                                 (WNID_A, (0.0, 0.0, 250.0, 100.0))]
    assert first[0].where.endswith(f"{WNID_A}_10026.xml:13") and first[1].where.endswith(".xml:25")
    val, _ = A.read_voc(imagenet / "Annotations" / "CLS-LOC" / "val")
    assert [a.box for a in val["ILSVRC2012_val_00000002"]] == [(10, 10, 90, 150), (50, 60, 70, 80)]
    one, _ = A.read_voc(imagenet / "Annotations" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000001.xml")
    assert list(one) == ["ILSVRC2012_val_00000001"]


def test_kaggle_csv(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\n"
                    f"ILSVRC2012_val_00008726,{WNID_B} 255 142 454 329 {WNID_B} 33 238 167 360 \n"
                    f"ILSVRC2012_val_00020130,{WNID_A} 1 0 262 498 \n")
    got, problems = A.read_kaggle_csv(path, classes=CLASSES, strict=True)
    assert problems == []
    assert [(a.label, a.box) for a in got["ILSVRC2012_val_00008726"]] == [
        (WNID_B, (255.0, 142.0, 454.0, 329.0)), (WNID_B, (33.0, 238.0, 167.0, 360.0))]
    assert got["ILSVRC2012_val_00020130"][0].where == f"{path}:3"
    assert A.read_annotations(path)[0] == got


@pytest.mark.parametrize("text,label", [
    ("file,xmin,ymin,xmax,ymax,class\na/x.png,1,2,30,40,coat\na/x.png,5,5,9,9,bag\n", "coat"),
    ("a/x.png,1,2,30,40,coat\na/x.png,5,5,9,9,bag\n", "coat"),  # no header
    ("class,file,ymin,xmin,ymax,xmax\ncoat,a/x.png,2,1,40,30\nbag,a/x.png,5,5,9,9\n", "coat"),  # reordered
    ("filename,xmin,ymin,xmax,ymax\na/x.png,1,2,30,40\na/x.png,5,5,9,9\n", None),  # no class column
])
def test_plain_csv(tmp_path, text, label):
    path = tmp_path / "boxes.csv"
    path.write_text(text)
    got, problems = A.read_annotations(path, strict=True)
    assert problems == [] and list(got) == ["a/x.png"]
    assert [a.box for a in got["a/x.png"]] == [(1.0, 2.0, 30.0, 40.0), (5.0, 5.0, 9.0, 9.0)]
    assert got["a/x.png"][0].label == label
    assert got["a/x.png"][1].where == f"{path}:{3 if 'xmin' in text else 2}"


# -- matching to the images, and where the boxes are ----------------------------------------------------

def test_load_boxes_imagenet_layout(imagenet):
    paths = images_of(imagenet, "train")
    matched, problems = A.load_boxes(imagenet, "train", paths, classes=CLASSES, check_sizes=True, strict=True)
    assert problems == []
    assert [len(m) for m in matched] == [2, 1, 1]
    val, problems = A.load_boxes(imagenet, "val", images_of(imagenet, "val"), check_sizes=True, strict=True)
    assert [[a.box for a in m] for m in val] == [[(30, 40, 290, 199)], [(10, 10, 90, 150), (50, 60, 70, 80)]]


def test_find_annotations(tmp_path, imagenet):
    assert A.find_annotations(imagenet, "val") == imagenet / "Annotations" / "CLS-LOC" / "val"
    assert A.find_annotations(imagenet, "test") is None
    (imagenet / "val" / "boxes.csv").write_text("x.JPEG,1,1,2,2\n")
    with pytest.raises(ValueError, match="several box annotations"):
        A.find_annotations(imagenet, "val")
    assert A.find_annotations(imagenet, "val", boxes=imagenet / "val" / "boxes.csv") == \
        imagenet / "val" / "boxes.csv"
    (imagenet / "LOC_test_solution.csv").write_text("ImageId,PredictionString\n")
    assert A.find_annotations(imagenet, "test") == imagenet / "LOC_test_solution.csv"
    with pytest.raises(FileNotFoundError, match="--boxes"):
        A.find_annotations(imagenet, "val", boxes=tmp_path / "nowhere.csv")
    with pytest.raises(FileNotFoundError, match="no box annotations"):
        A.load_boxes(tmp_path, "train", [])


def test_match_by_relative_path_name_or_stem_and_fill_labels(tmp_path):
    root = tmp_path / "train"
    paths = [str(root / "coat" / "a.png"), str(root / "bag" / "a.png"), str(root / "bag" / "b.png")]
    annotations = {"coat/a.png": [A.Annotation(None, (1, 1, 5, 5), "f:1")],
                   "bag/a": [A.Annotation("bag", (2, 2, 6, 6), "f:2")],
                   "b": [A.Annotation(None, (3, 3, 7, 7), "f:3")]}
    matched, problems = A.match_images(annotations, paths, root=root, labels=["coat", "bag", "bag"],
                                       strict=True)
    assert problems == []
    assert [[(a.label, a.box) for a in m] for m in matched] == [
        [("coat", (1, 1, 5, 5))], [("bag", (2, 2, 6, 6))], [("bag", (3, 3, 7, 7))]]
    # "a" alone names two images: reported, not guessed.
    _, problems = A.match_images({"a": [A.Annotation(None, (1, 1, 5, 5), "f:9")]}, paths[:2], root=root)
    assert problems[0][0] == "f:9" and "matches 2 images" in problems[0][1]


# -- bad annotations ------------------------------------------------------------------------------------

BAD_VOC = [  # (objects, size, expected reason); the <object> starts on line 13
    ([(WNID_A, (50, 20, 50, 80))], (100, 100), "zero or negative area"),
    ([(WNID_A, (60, 20, 40, 80))], (100, 100), "zero or negative area"),
    ([(WNID_A, (10, 20, 140, 80))], (100, 100), "outside the 100x100 image"),
    ([(WNID_A, (-3, 20, 40, 80))], (100, 100), "outside"),
    ([("n99999999", (10, 20, 40, 80))], (100, 100), "'n99999999' is not in the class list"),
    ([(WNID_A, ("ten", 20, 40, 80))], (100, 100), "coordinates must be 4 numbers"),
]


@pytest.mark.parametrize("objects,size,reason", BAD_VOC)
def test_bad_voc_object(tmp_path, objects, size, reason):
    folder = tmp_path / "Annotations"
    folder.mkdir()
    (folder / "good.xml").write_text(voc_xml("good", "val", 100, 100, [(WNID_A, (1, 1, 50, 50))]))
    bad = folder / "bad.xml"
    bad.write_text(voc_xml("bad", "val", *size, objects + [(WNID_A, (1, 1, 50, 50))]))
    got, problems = A.read_voc(folder, classes=CLASSES)
    assert problems == [(f"{bad}:13", problems[0][1])] and reason in problems[0][1]
    assert len(got["bad"]) == 1 and len(got["good"]) == 1  # only the bad object is skipped
    with pytest.raises(ValueError, match=re.escape(reason)) as e:
        A.read_voc(folder, classes=CLASSES, strict=True)
    assert f"{bad}:13" in str(e.value)


def test_malformed_xml_and_missing_size(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotation>\n<size><width>10</width>\n</annotation>\n")
    nosize = tmp_path / "nosize.xml"
    nosize.write_text("<annotation>\n<object><name>x</name></object>\n</annotation>\n")
    got, problems = A.read_voc(tmp_path)
    assert problems == [(f"{broken}:3", "malformed XML: mismatched tag"),
                        (f"{nosize}:1", "no <size> with numeric <width> and <height>")]
    with pytest.raises(ValueError) as e:
        A.read_voc(tmp_path, strict=True)
    assert "2 problem(s)" in str(e.value) and str(broken) in str(e.value) and str(nosize) in str(e.value)


BAD_KAGGLE = [
    ("ImageId,PredictionString\nimg1,n01440764 1 2 3\n", ":2", "must repeat"),
    ("ImageId,PredictionString\nimg1,n01440764 1 2 3 4,extra\n", ":2", "expected 2 fields"),
    ("ImageId,PredictionString\nimg1,n01440764 5 2 5 4\n", ":2", "zero or negative area"),
    ("ImageId,PredictionString\nimg1,n01440764 -1 2 5 4\n", ":2", "outside"),
    ("ImageId,PredictionString\nimg1,n00000001 1 2 5 4\n", ":2", "not in the class list"),
    ("ImageId,PredictionString\nimg1,n01440764 1 2 five 4\n", ":2", "4 numbers"),
    ("Image,Boxes\nimg1,n01440764 1 2 5 4\n", ":1", "expected the header"),
]


@pytest.mark.parametrize("text,line,reason", BAD_KAGGLE)
def test_bad_kaggle_rows(tmp_path, text, line, reason):
    path = tmp_path / "LOC_train_solution.csv"
    path.write_text(text + "img2,n01440764 1 2 5 4\n")
    got, problems = A.read_kaggle_csv(path, classes=CLASSES)
    assert len(problems) == 1 and problems[0][0] == f"{path}{line}" and reason in problems[0][1]
    if reason != "expected the header":
        assert [a.box for a in got["img2"]] == [(1, 2, 5, 4)]  # the good row is kept
    with pytest.raises(ValueError, match=f"{path.name}{line}"):
        A.read_kaggle_csv(path, classes=CLASSES, strict=True)


BAD_PLAIN = [
    ("a.png,1,2,3\n", "got 4 fields"),
    ("a.png,1,2,3,4,coat,extra\n", "got 7 fields"),
    ("a.png,1,2,1,4,coat\n", "zero or negative area"),
    ("a.png,1,2,5,4,hat\n", "'hat' is not in the class list"),
    (",1,2,5,4,coat\n", "empty file name"),
    ("a.png,1,x,5,4,coat\n", "4 numbers"),
]


@pytest.mark.parametrize("row,reason", BAD_PLAIN)
def test_bad_plain_rows(tmp_path, row, reason):
    path = tmp_path / "boxes.csv"
    path.write_text("file,xmin,ymin,xmax,ymax,class\nb.png,1,1,5,5,coat\n" + row)
    got, problems = A.read_boxes_csv(path, classes=["coat", "bag"])
    assert problems == [(f"{path}:3", problems[0][1])] and reason in problems[0][1]
    assert [a.box for a in got["b.png"]] == [(1, 1, 5, 5)]
    with pytest.raises(ValueError, match="1 problem"):
        A.read_boxes_csv(path, classes=["coat", "bag"], strict=True)


def test_bad_plain_header(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,left,top,right,bottom\nb.png,1,1,5,5\n")
    got, problems = A.read_boxes_csv(path)
    assert got == {} and problems[0][0] == f"{path}:1" and "header" in problems[0][1]


def test_missing_images_missing_annotations_and_boxes_outside(tmp_path):
    root = tmp_path / "val"
    (root / "coat").mkdir(parents=True)
    paths = []
    for name, size in (("a.png", (40, 30)), ("b.png", (40, 30)), ("c.png", (20, 20))):
        Image.new("RGB", size).save(root / "coat" / name)
        paths.append(str(root / "coat" / name))
    (root / "boxes.csv").write_text("a.png,1,1,39,29\n"   # fine
                                    "c.png,1,1,25,10\n"   # outside c's 20 x 20
                                    "gone.png,1,1,5,5\n")  # no such image
    matched, problems = A.load_boxes(tmp_path, "val", paths, check_sizes=True, labels=["coat"] * 3)
    assert [len(m) for m in matched] == [1, 0, 0] and matched[0][0].label == "coat"
    csv = root / "boxes.csv"
    assert problems == [
        (f"{csv}:2", f"box (1, 1, 25, 10) is outside the 20x20 image ({paths[2]})"),
        (f"{csv}:3", "annotation for 'gone.png', which is not among the images"),
        (paths[1], "no box annotation for this image"),
        (paths[2], "no valid box for this image"),
    ]
    with pytest.raises(ValueError) as e:
        A.load_boxes(tmp_path, "val", paths, check_sizes=True, strict=True)
    for where, _ in problems:
        assert where in str(e.value)
    # Without the size check the box outside c is not caught (the CSV has no sizes)...
    _, problems = A.load_boxes(tmp_path, "val", paths)
    assert len(problems) == 2
    # ...and image_sizes reads headers; None for a file that is not an image.
    (root / "coat" / "junk.png").write_bytes(b"not an image")
    assert A.image_sizes(paths + [str(root / "coat" / "junk.png")]) == [(40, 30), (40, 30), (20, 20), None]

"""Presentation: the confusion matrix PNG and the one scale formatter."""

from vgg import report


def test_confusion_png(tmp_path):
    from PIL import Image

    path = report.save_confusion_png([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "c" / "conf.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A picture of the matrix: it decodes, has shades (the cells), and another matrix gives another one.
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    assert pixels.width > 100 and pixels.height > 100 and len(pixels.getcolors(1 << 16) or range(1000)) > 10
    other = report.save_confusion_png([[0, 4], [3, 1]], ["cat", "dog"], tmp_path / "other.png", "t")
    with Image.open(other) as image:
        assert image.convert("RGB").tobytes() != pixels.tobytes()


def test_format_scale_writes_fixed_and_jittered_s():
    assert report.format_scale((256, 256)) == "256"
    assert report.format_scale((256, 512)) == "[256,512]"  # the training log
    assert report.format_scale([256, 512], sep=";") == "[256;512]"  # the evaluation table (Tables 3-6)

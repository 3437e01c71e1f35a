"""Tests for vgg.data.images: formats, modes, EXIF orientation, draft mode, training crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from vgg import data as D
from vgg.data import Augment

from .samples import smooth_image


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"),
                                     ("GIF", "gif"), ("TIFF", "tif")])
def test_formats(tmp_path, fmt, ext):
    img = smooth_image(30, 40)
    path = tmp_path / f"x.{ext}"
    img.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = D.load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    err = np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16))
    assert err.mean() < (8 if fmt in ("JPEG", "GIF") else 0.01)


def test_modes_become_correct_rgb(tmp_path):
    grey = Image.new("L", (8, 6), 77)
    grey.save(tmp_path / "l.png")
    assert np.asarray(D.load_image(tmp_path / "l.png"))[0, 0].tolist() == [77, 77, 77]
    pal = Image.new("P", (8, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert np.asarray(D.load_image(tmp_path / "p.png"))[2, 3].tolist() == [10, 200, 30]
    rgba = Image.new("RGBA", (8, 6), (200, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))       # fully transparent: the white background
    rgba.putpixel((1, 0), (0, 0, 0, 128))     # half transparent black over white: grey
    rgba.save(tmp_path / "rgba.png")
    a = np.asarray(D.load_image(tmp_path / "rgba.png"))
    assert a[0, 0].tolist() == [255, 255, 255] and a[0, 2].tolist() == [200, 0, 0]
    assert abs(int(a[0, 1, 0]) - 127) <= 1
    Image.new("LA", (8, 6), (50, 255)).save(tmp_path / "la.png")
    assert np.asarray(D.load_image(tmp_path / "la.png"))[0, 0].tolist() == [50, 50, 50]
    tpal = Image.new("P", (8, 6), 0)
    tpal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    tpal.putpixel((1, 1), 1)
    tpal.save(tmp_path / "tp.gif", transparency=0)
    t = np.asarray(D.load_image(tmp_path / "tp.gif"))
    assert t[0, 0].tolist() == [255, 255, 255] and t[1, 1].tolist() == [10, 200, 30]
    # CMYK JPEG: pure magenta + yellow ink is red.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    r, g, b = np.asarray(D.load_image(tmp_path / "cmyk.jpg"))[8, 8].tolist()
    assert r > 240 and g < 15 and b < 15
    # 16-bit greyscale: scaled to 8 bits, not clipped (65535 is white, 257 * 100 is 100).
    a16 = np.array([[65535, 257 * 100], [0, 32896]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.asarray(D.load_image(tmp_path / "g16.png"))[..., 0].tolist() == [[255, 100], [0, 128]]
    Image.new("1", (8, 6), 1).save(tmp_path / "bw.png")
    assert np.asarray(D.load_image(tmp_path / "bw.png"))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation(tmp_path, orientation):
    img = smooth_image(30, 50)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    expected = ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg"))
    out = D.load_image(tmp_path / "o.jpg")
    assert out.size == expected.size == ((30, 50) if orientation >= 5 else (50, 30))
    assert np.array_equal(np.asarray(out), np.asarray(expected.convert("RGB")))
    im, transpose = D.open_image(tmp_path / "o.jpg")
    assert D.oriented_size(im, transpose) == (out.height, out.width)
    im.close()


def test_draft_mode_for_large_jpegs(tmp_path):
    img = smooth_image(600, 800)
    img.save(tmp_path / "big.jpg", quality=95)
    # Shorter side 100 wanted: 6x smaller, so the JPEG is decoded at 1/4 scale (200 x 150), not below.
    assert D.load_image(tmp_path / "big.jpg", (100, 133)).size == (200, 150)
    assert D.load_image(tmp_path / "big.jpg", (400, 533)).size == (800, 600)  # < 2x: full decode
    out = D.decode_rescaled(str(tmp_path / "big.jpg"), 100)
    assert out.shape == (3, 100, 133)
    ref = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((133, 100), Image.BILINEAR))
    assert np.abs(out.permute(1, 2, 0).numpy().astype(int) - ref).mean() < 2.0


def test_train_crop_equals_rescale_then_crop(tmp_path):
    """The worker's box-resized crop equals Pillow's full rescale to S followed by the crop."""
    img = smooth_image(45, 70)
    img.save(tmp_path / "x.png")
    for s in (32, 48, 64, 90):
        aug = Augment(32, (s, s), flip=False)
        for position in range(5):
            p = D.augment_parameters(aug, 0, 0, [position], 45, 70)
            crop = D.decode_train_crop(str(tmp_path / "x.png"), 32, s, *p["u_crop"][0])
            sh, sw = D.rescaled_size(45, 70, s)
            x0, y0 = round(p["box"][0][0] * sw / 70), round(p["box"][0][1] * sh / 45)
            full = np.asarray(img.resize((sw, sh), Image.BILINEAR))[y0:y0 + 32, x0:x0 + 32]
            assert np.abs(crop.permute(1, 2, 0).numpy().astype(int) - full).max() <= 1


def test_misleading_extension_that_is_a_valid_image_is_read(tmp_path):
    smooth_image(20, 30).save(tmp_path / "really_a_png.jpg", "PNG")
    assert D.load_image(tmp_path / "really_a_png.jpg").size == (30, 20)

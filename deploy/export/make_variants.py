"""Write valid images in many format variants, for `make decode-diff`.

    python deploy/export/make_variants.py OUTDIR

Pillow writes each one (JPEG: qualities, subsamplings, progressive, grey,
CMYK, every EXIF orientation; PNG: grey, grey+alpha, 1/4/8-bit palettes with transparency, 16-bit,
RGBA; GIF; lossy and lossless WebP with and without alpha, at odd, even and
one-pixel sizes; BMP; TIFF with each compression Pillow writes), so the
comparison covers the variants a real collection holds and not only damaged
files. The images are drawn from a fixed seed.
"""

import os
import sys

import numpy as np
from PIL import Image


def photo(rng, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(float)
    planes = [128 + 60 * np.sin(x / 17 + c) + 40 * np.cos(y / 23 - c) for c in range(3)]
    img = np.stack(planes, -1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    base = Image.fromarray(photo(rng, 97, 61))
    alpha = rng.integers(0, 256, (61, 97), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([np.asarray(base), alpha]), "RGBA")
    n = 0

    def save(name, im, fmt, **kw):
        nonlocal n
        im.save(os.path.join(out, name), fmt, **kw)
        n += 1

    save("q100.jpg", base, "JPEG", quality=100)
    save("q50_420.jpg", base, "JPEG", quality=50, subsampling=2)
    save("q85_422.jpg", base, "JPEG", quality=85, subsampling=1)
    save("optimized.jpg", base, "JPEG", optimize=True)
    save("progressive.jpg", base, "JPEG", progressive=True)
    save("grey.jpg", base.convert("L"), "JPEG")
    save("grey_progressive.jpg", base.convert("L"), "JPEG", progressive=True)
    save("cmyk.jpg", base.convert("CMYK"), "JPEG")
    save("cmyk_progressive.jpg", base.convert("CMYK"), "JPEG", progressive=True)
    for o in range(1, 9):  # every EXIF orientation; decode-diff applies it on both sides
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"exif{o}.jpg", base, "JPEG", exif=exif.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6.png", base, "PNG", exif=exif.tobytes())
    save("exif6.webp", base, "WEBP", exif=exif.tobytes())
    save("rgb.png", base, "PNG")
    save("grey.png", base.convert("L"), "PNG")
    save("grey_alpha.png", base.convert("LA"), "PNG")
    save("rgba.png", rgba, "PNG")
    save("palette_trns.png", base.quantize(16), "PNG", transparency=3)
    save("palette_4bit.png", base.quantize(16), "PNG", bits=4)
    save("palette_rgba.png", rgba.quantize(32), "PNG")
    save("bilevel.png", base.convert("1"), "PNG")
    save("grey16.png", Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257), "PNG")
    save("palette.gif", base.quantize(100), "GIF")
    save("grey.gif", base.convert("L"), "GIF")
    save("transparent.gif", base.quantize(64), "GIF", transparency=5)
    for w, h in [(97, 61), (96, 60), (97, 60), (96, 61), (1, 1), (2, 2), (3, 5), (16, 1), (1, 16)]:
        im = Image.fromarray(photo(rng, w, h))
        save(f"lossy_{w}x{h}.webp", im, "WEBP", quality=75)
        save(f"lossy_alpha_{w}x{h}.webp", im.convert("RGBA"), "WEBP", quality=75)
    save("lossy_q20.webp", base, "WEBP", quality=20)
    save("lossless.webp", base, "WEBP", lossless=True)
    save("lossless_alpha.webp", rgba, "WEBP", lossless=True)
    save("rgb.bmp", base, "BMP")
    save("rgba.bmp", rgba, "BMP")
    save("palette.bmp", base.quantize(200), "BMP")
    save("grey.bmp", base.convert("L"), "BMP")
    save("bilevel.bmp", base.convert("1"), "BMP")
    for comp in ["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"]:
        save(f"rgb_{comp}.tiff", base, "TIFF", compression=comp)
    save("grey.tiff", base.convert("L"), "TIFF")
    save("rgba.tiff", rgba, "TIFF")
    save("palette.tiff", base.quantize(64), "TIFF")
    save("cmyk.tiff", base.convert("CMYK"), "TIFF")
    print(f"make_variants: {n} images in {out}")


if __name__ == "__main__":
    main()

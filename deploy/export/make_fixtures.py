"""Build the preprocessing parity fixtures in shared/imageprep/testdata.

It draws a handful of photo-like test images (gradients, textures, noise,
several sizes and aspect ratios, grey, RGBA, an EXIF-rotated JPEG, a tiny one
that must be upscaled), saves them as JPEG and PNG, and runs the Hugging Face
processors the article used on each: CLIPImageProcessor for CLIP ViT-B/32 and
BitImageProcessor as configured for facebook/dinov2-base. It records, per
image and model, the sha256 of the processor's pixel_values (float32,
channels-first, little-endian) and of the 8-bit pixels after resize and centre
crop, plus a few sampled values for diagnostics. The Go tests recompute both
and compare bit for bit, so `make test` needs no Python.

Images are read as embedfleet reads them: EXIF orientation applied
(ImageOps.exif_transpose), then convert("RGB") inside the processor.

Usage: python deploy/export/make_fixtures.py OUTDIR [--dump DIR]
"""

import argparse
import hashlib
import io
import json
import os

import numpy as np
from PIL import Image, ImageOps
import transformers

SEED = 20261126

# The article's processors are the Pillow ones. transformers 5 renamed them
# (*Pil) and made the plain names torchvision-backed, which resize
# differently; take the Pillow class under either name.
CLIPImageProcessor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
BitImageProcessor = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor

PROCESSORS = {
    "clip-vit-b32": CLIPImageProcessor(),  # its defaults are openai/clip-vit-base-patch32's
    "dinov2-base": BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    ),
}


def photo_like(rng, w, h):
    """Smooth gradients, a few soft blobs, sinusoidal texture and grain."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 128 + 60 * (a * x / w + b * y / h)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * max(w, h)
        col = rng.uniform(-90, 90, 3)
        img += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * col
    fx, fy = rng.uniform(0.02, 0.3, 2)
    img += 18 * np.sin(fx * x + fy * y)[..., None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noise(rng, w, h, block):
    small = rng.integers(0, 256, (h // block + 1, w // block + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, block, 0), block, 1)[:h, :w]


def build_images(rng):
    """Name -> encoded bytes."""
    out = {}

    def save(name, arr_or_img, fmt, **kw):
        im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("photo_481x321.jpg", photo_like(rng, 481, 321), "JPEG", quality=90)
    save("photo_320x480.jpg", photo_like(rng, 320, 480), "JPEG", quality=85)
    save("photo_1023x767.jpg", photo_like(rng, 1023, 767), "JPEG", quality=92)
    save("noise_640x427.jpg", noise(rng, 640, 427, 3), "JPEG", quality=75)
    save("q60_444_500x375.jpg", photo_like(rng, 500, 375), "JPEG", quality=60, subsampling=0)
    save("small_100x75.jpg", photo_like(rng, 100, 75), "JPEG", quality=90)
    save("gray_300x300.jpg", Image.fromarray(photo_like(rng, 300, 300)).convert("L"), "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    save("exif6_400x300.jpg", photo_like(rng, 400, 300), "JPEG", quality=90, exif=exif.tobytes())
    save("wide_700x140.png", photo_like(rng, 700, 140), "PNG")
    rgba = np.dstack([photo_like(rng, 157, 211), np.linspace(0, 255, 157 * 211).reshape(211, 157).astype(np.uint8)])
    save("rgba_157x211.png", Image.fromarray(rgba, "RGBA"), "PNG")
    cmyk = Image.fromarray(photo_like(rng, 160, 120)).convert("CMYK")
    save("cmyk_160x120.jpg", cmyk, "JPEG", quality=90)
    rgb16 = photo_like(rng, 120, 90).astype(np.uint16) * 257 + rng.integers(0, 257, (90, 120, 3)).astype(np.uint16)
    buf = io.BytesIO()
    # Pillow cannot write 16-bit RGB PNG; write it by hand (one IDAT, filter 0).
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    buf.write(b"\x89PNG\r\n\x1a\n")
    buf.write(chunk(b"IHDR", struct.pack(">IIBBBBB", 120, 90, 16, 2, 0, 0, 0)))
    buf.write(chunk(b"IDAT", zlib.compress(raw)))
    buf.write(chunk(b"IEND", b""))
    out["rgb16_120x90.png"] = buf.getvalue()
    frames = [Image.fromarray(photo_like(rng, 90, 70)).quantize(64) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["anim_90x70.gif"] = buf.getvalue()
    save("lossless_96x64.webp", photo_like(rng, 96, 64), "WEBP", lossless=True)
    save("photo_150x110.bmp", photo_like(rng, 150, 110), "BMP")
    save("photo_140x100.tiff", photo_like(rng, 140, 100), "TIFF")
    save("palette_130x100.png", Image.fromarray(photo_like(rng, 130, 100)).quantize(32), "PNG")
    # GIFs whose first frame covers only part of the logical screen, one with
    # a transparent index: Pillow shows the whole screen, fills what the frame
    # leaves with the transparent index (else index 0), and gives transparent
    # pixels their palette colour.
    frame = Image.fromarray(photo_like(rng, 100, 70)).quantize(64)
    common = int(np.bincount(np.asarray(frame).ravel()).argmax())
    out["offset_transparent_150x110.gif"] = gif_on_screen(frame, (150, 110), (30, 25), transparency=common)
    frame = Image.fromarray(photo_like(rng, 64, 50)).quantize(16)
    out["offset_120x96.gif"] = gif_on_screen(frame, (120, 96), (10, 40))
    # A CMYK JPEG without its Adobe segment: Pillow reads every CMYK JPEG as
    # inverted ("CMYK;I"), marker or not.
    buf = io.BytesIO()
    Image.fromarray(photo_like(rng, 96, 72)).convert("CMYK").save(buf, "JPEG", quality=90)
    out["cmyk_no_adobe_96x72.jpg"] = without_segment(buf.getvalue(), 0xEE)
    save("progressive_200x150.jpg", photo_like(rng, 200, 150), "JPEG", quality=88, progressive=True)
    # Lossy WebP: libwebp's chroma upsampling and colour conversion, with and
    # without an alpha plane, odd and even sides.
    save("lossy_161x107.webp", photo_like(rng, 161, 107), "WEBP", quality=80)
    save("lossy_alpha_120x90.webp", Image.fromarray(photo_like(rng, 120, 90)).convert("RGBA"), "WEBP", quality=70)
    # Tiny and extreme shapes: upscaling from a few pixels, a long side many
    # times the short one.
    # (The processors take an array whose first side is 1 or 3 pixels for
    # channels-first, so no such heights.)
    for w, h in [(2, 2), (5, 4), (16, 2), (1, 16), (7, 300)]:
        save(f"tiny_{w}x{h}.png", photo_like(rng, w, h), "PNG")
    return out


def without_segment(jpg, marker):
    """jpg with its marker segments of the given kind (0xE0-0xEF) removed."""
    out, i = bytearray(jpg[:2]), 2
    while jpg[i] == 0xFF and jpg[i + 1] not in (0xDA, 0xD9):
        size = int.from_bytes(jpg[i + 2 : i + 4], "big")
        if jpg[i + 1] != marker:
            out += jpg[i : i + 2 + size]
        i += 2 + size
    return bytes(out + jpg[i:])


def gif_on_screen(frame, screen, offset, transparency=None):
    """frame saved as a one-image GIF, then its logical screen enlarged to
    screen and the image moved to offset."""
    import struct

    buf = io.BytesIO()
    kw = {} if transparency is None else {"transparency": transparency}
    frame.save(buf, "GIF", optimize=False, **kw)
    g = bytearray(buf.getvalue())
    g[6:10] = struct.pack("<HH", *screen)
    p = 13 + (3 << ((g[10] & 7) + 1) if g[10] & 0x80 else 0)
    while g[p] == 0x21:  # extensions: label, then sub-blocks
        p += 2
        while g[p]:
            p += g[p] + 1
        p += 1
    if g[p] != 0x2C:
        raise SystemExit("gif_on_screen: no image descriptor where expected")
    g[p + 1 : p + 5] = struct.pack("<HH", *offset)
    return bytes(g)


def crop_u8(img, proc):
    """The processor's resize + centre crop, done with Pillow directly."""
    img = img.convert("RGB")
    w, h = img.size
    edge = proc.size["shortest_edge"]
    if w <= h:
        nw, nh = edge, int(edge * h / w)
    else:
        nw, nh = int(edge * w / h), edge
    r = np.asarray(img.resize((nw, nh), resample=proc.resample))
    ch, cw = proc.crop_size["height"], proc.crop_size["width"]
    top, left = (nh - ch) // 2, (nw - cw) // 2
    return np.ascontiguousarray(r[top : top + ch, left : left + cw])


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--dump", help="also write raw arrays here, for debugging")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(args.outdir, "images"), exist_ok=True)
    manifest = {"generator": "deploy/export/make_fixtures.py", "seed": SEED, "cases": []}
    for name, data in build_images(rng).items():
        with open(os.path.join(args.outdir, "images", name), "wb") as f:
            f.write(data)
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        for model, proc in PROCESSORS.items():
            pv = proc(images=img, return_tensors="np")["pixel_values"][0].astype("<f4")
            crop = crop_u8(img, proc)
            # The processor's normalisation of our crop must give its own
            # pixel_values exactly, or the crop is not what it computed.
            mean = np.array(proc.image_mean, dtype=np.float32)
            std = np.array(proc.image_std, dtype=np.float32)
            again = ((crop.astype(np.float64) * proc.rescale_factor).astype(np.float32) - mean) / std
            if not np.array_equal(again.transpose(2, 0, 1), pv):
                raise SystemExit(f"{name} {model}: Pillow crop does not reproduce the processor's output")
            flat = pv.reshape(-1)
            idx = [0, 1, 777, 50175, 50176, 100351, 100352, flat.size - 1]
            manifest["cases"].append(
                {
                    "image": name,
                    "model": model,
                    "width": img.size[0],
                    "height": img.size[1],
                    "pixel_values_sha256": sha(pv),
                    "crop_sha256": sha(crop),
                    "samples": {str(i): float(flat[i]) for i in idx},
                    "mean": float(flat.astype(np.float64).mean()),
                }
            )
            if args.dump:
                os.makedirs(args.dump, exist_ok=True)
                crop.tofile(os.path.join(args.dump, f"{name}.{model}.crop.u8"))
                pv.tofile(os.path.join(args.dump, f"{name}.{model}.pv.f32"))
    with open(os.path.join(args.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(manifest['cases'])} cases to {args.outdir}")


if __name__ == "__main__":
    main()

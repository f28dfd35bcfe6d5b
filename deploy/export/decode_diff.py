"""Compare embedfleet's decoder with Pillow on the inputs decodediff wrote.

    go run ./deploy/export/decodediff --out DIR PATH...
    python deploy/export/decode_diff.py DIR

Each input is opened as the article's code and the parity fixtures open it
(Image.open, EXIF orientation applied, convert("RGB")) and put in one class:

  equal                 both decode it to the same pixels
  size differs          both decode it, to different sizes        (a defect)
  pixels differ         both decode it, same size, other pixels   (a defect)
  deliberate            a 16-bit greyscale PNG: embedfleet keeps each sample's
                        high byte, Pillow clips it to 255 (docs/models.md)
  embedfleet refuses    Pillow decodes it, embedfleet reports an error
  Pillow refuses        embedfleet decodes it, Pillow raises
  both refuse

It prints the counts per format and a few examples of every class but the
first and the last, and exits 1 when any input is in one of the defect
classes. The two refusal classes are damaged files that one decoder is more
lenient with than the other; they are reported, not failed.
"""

import argparse
import collections
import io
import json
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

DEFECTS = ("size differs", "pixels differ")


def pillow_rgb(data):
    """Pillow's RGB pixels, and what embedfleet gives on purpose instead
    (None where it gives the same)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        rgb = np.asarray(img.convert("RGB"))
        deliberate = None
        if img.mode.startswith("I;16"):
            grey = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
            deliberate = np.repeat(grey[..., None], 3, axis=2)
        return rgb, deliberate


def classify(rec, folder):
    with open(rec["bytes"], "rb") as f:
        data = f.read()
    try:
        (ref, deliberate), perr = pillow_rgb(data), None
    except Exception as e:  # Pillow raises many types on damaged files
        ref, perr = None, f"{type(e).__name__}: {e}"
    if rec.get("error") and perr:
        return "both refuse", ""
    if rec.get("error"):
        return "embedfleet refuses", rec["error"]
    if perr:
        return "Pillow refuses", perr
    if (rec["height"], rec["width"]) != ref.shape[:2]:
        return "size differs", f"embedfleet {rec['width']}x{rec['height']}, Pillow {ref.shape[1]}x{ref.shape[0]}"
    got = np.fromfile(os.path.join(folder, f"{rec['id']}.rgb"), dtype=np.uint8).reshape(ref.shape)
    if deliberate is not None and np.array_equal(got, deliberate):
        return "deliberate", "16-bit grey: high byte, where Pillow clips"
    if not np.array_equal(got, ref):
        d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        return "pixels differ", f"max |diff| {d.max()}, {100 * (d > 0).mean():.2f}% of samples"
    return "equal", ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="the --out folder of decodediff")
    ap.add_argument("--examples", type=int, default=3, help="examples printed per class and format")
    args = ap.parse_args()
    with open(os.path.join(args.folder, "index.json")) as f:
        recs = json.load(f)
    counts = collections.Counter()
    examples = collections.defaultdict(list)
    for rec in recs:
        cls, why = classify(rec, args.folder)
        key = (rec["format"] or "unknown", cls)
        counts[key] += 1
        if len(examples[key]) < args.examples:
            examples[key].append(f"{rec['path']}: {why}"[:200])
    print(f"{'format':8} {'class':20} count")
    for (fmt, cls), n in sorted(counts.items()):
        print(f"{fmt:8} {cls:20} {n}")
    for (fmt, cls), lines in sorted(examples.items()):
        if cls in ("equal", "both refuse", "deliberate"):
            continue
        print(f"\n{fmt} / {cls}:")
        for line in lines:
            print("  " + line)
    defects = sum(n for (_, cls), n in counts.items() if cls in DEFECTS)
    print(f"\n{len(recs)} inputs, {defects} decoded differently by embedfleet and Pillow")
    sys.exit(1 if defects else 0)


if __name__ == "__main__":
    main()

"""DISC21-style copy-detection queries from a folder of reference photos.

Sorted by name, the first --refs images are the references (copied to
OUT/refs); queries are made from --queries of them, picked at random, each
edited by a seeded random combination of 1-3 AugLy transforms (crops,
rotations, flips, text overlays, colour and contrast changes, blur, JPEG
quality, padding, overlay onto another image; AugLy 1.0's meme format needs Pillow
< 10 and is left out); --distractors
more queries come from images that are not references, so they have no
match. With --background N, N more images that are neither references nor
the source of any query go to OUT/background/: the unrelated set that copy
scores are normalised against (bench copydetect --background). No image has
two roles. Writes OUT/refs/, OUT/queries/, OUT/truth.csv (query,reference;
an empty reference for distractors) and OUT/background/.

Usage: python deploy/bench/make_queries.py --images DIR --out DIR [--refs 400 --queries 200 --distractors 50 --background 0]
"""

import argparse
import csv
import os
import random
import shutil

import augly.image as imaugs
from PIL import Image


def transforms(rng, others):
    """The catalogue: each entry edits a PIL image."""
    return [
        lambda im: imaugs.crop(im, x1=rng.uniform(0, 0.25), y1=rng.uniform(0, 0.25), x2=rng.uniform(0.75, 1), y2=rng.uniform(0.75, 1)),
        lambda im: imaugs.rotate(im, degrees=rng.choice([90, 180, 270, rng.uniform(-25, 25)])),
        lambda im: imaugs.hflip(im),
        lambda im: imaugs.overlay_text(im, text=[rng.randrange(0, 200) for _ in range(rng.randrange(5, 15))],
                                       font_size=rng.uniform(0.1, 0.25), opacity=rng.uniform(0.6, 1.0),
                                       x_pos=rng.uniform(0, 0.6), y_pos=rng.uniform(0, 0.6)),
        lambda im: imaugs.color_jitter(im, brightness_factor=rng.uniform(0.5, 1.5), contrast_factor=rng.uniform(0.5, 1.5),
                                       saturation_factor=rng.uniform(0.2, 2.0)),
        lambda im: imaugs.grayscale(im),
        lambda im: imaugs.blur(im, radius=rng.uniform(1, 4)),
        lambda im: imaugs.encoding_quality(im, quality=rng.randrange(10, 40)),
        lambda im: imaugs.pad_square(im, color=tuple(rng.randrange(256) for _ in range(3))),
        lambda im: imaugs.overlay_image(Image.open(rng.choice(others)).convert("RGB"), overlay=im,
                                        overlay_size=rng.uniform(0.4, 0.8), x_pos=rng.uniform(0, 0.2), y_pos=rng.uniform(0, 0.2)),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--refs", type=int, default=400)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--distractors", type=int, default=50)
    ap.add_argument("--background", type=int, default=0)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    names = sorted(f for f in os.listdir(args.images) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    refs, pool = names[: args.refs], names[args.refs:]
    if len(refs) < args.queries or len(pool) < args.distractors + args.background:
        raise SystemExit(f"make_queries: {len(names)} images is too few for {args.refs} refs + {args.distractors} distractors"
                         f" + {args.background} background")
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(os.path.join(args.out, "refs"))
    os.makedirs(os.path.join(args.out, "queries"))
    for n in refs:
        shutil.copy(os.path.join(args.images, n), os.path.join(args.out, "refs", n))
    others = [os.path.join(args.images, n) for n in refs]
    cat = transforms(rng, others)
    rows = []
    # Drawn in this order, so that --background 0 makes the same set as before it existed.
    sources = [(n, n) for n in rng.sample(refs, args.queries)]
    distractors = rng.sample(pool, args.distractors)
    sources += [(n, "") for n in distractors]
    background = rng.sample(sorted(set(pool) - set(distractors)), args.background) if args.background else []
    if background:
        os.makedirs(os.path.join(args.out, "background"))
        for n in background:
            shutil.copy(os.path.join(args.images, n), os.path.join(args.out, "background", n))
    rng.shuffle(sources)
    for i, (src, truth) in enumerate(sources):
        im = Image.open(os.path.join(args.images, src)).convert("RGB")
        for t in rng.sample(cat, rng.randrange(1, 4)):
            im = t(im).convert("RGB")
        q = f"q{i:05d}.jpg"
        im.save(os.path.join(args.out, "queries", q), quality=85)
        rows.append((q, truth))
    with open(os.path.join(args.out, "truth.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "reference"])
        w.writerows(rows)
    print(f"make_queries refs={len(refs)} queries={args.queries} distractors={args.distractors} background={len(background)} out={args.out}")


if __name__ == "__main__":
    main()

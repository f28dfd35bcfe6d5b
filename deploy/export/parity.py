"""Full-size parity: embedfleet against the article's PyTorch pipeline.

Exports full-size random-init clip-vit-b32 and dinov2-base once (seeded, the
real architectures; cached under the models folder given), embeds every image
of a folder with embedfleet (`embedfleet embed --format npy`) and with the
Hugging Face processor + PyTorch on the same weights, and prints per model

  parity MODEL min_cosine=X mean_cosine=Y n=N
  similarity MODEL embedfleet=S article=T abs_diff=D

where the second line is the article's two-image score (cos+1)/2 on its own
example images, computed by its code as written and by `embedfleet
similarity --no-exif-orientation`.

Usage: python deploy/export/parity.py --bin bin/embedfleet --images DIR --seed-images DIR --models DIR
"""

import argparse
import os
import subprocess
import sys
import types

import numpy as np
import torch
from export import build, export
from make_fixtures import PROCESSORS
from PIL import Image, ImageOps

MODELS = ["clip-vit-b32", "dinov2-base"]


def torch_embed(name, model, proc, images):
    with torch.no_grad():
        inputs = proc(images=images, return_tensors="pt")
        out = model(**inputs)
        v = out.image_embeds if name == "clip-vit-b32" else out.last_hidden_state.mean(dim=1)
    return v.numpy().astype(np.float64)


def read_npy_rows(path):
    return np.load(path).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--seed-images", required=True)
    ap.add_argument("--models", required=True, help="folder for the exported full-size random-init models")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    files = sorted(os.path.join(args.images, f) for f in os.listdir(args.images))
    if args.limit:
        files = files[: args.limit]
    tmp = os.path.join(args.models, ".parity")
    os.makedirs(tmp, exist_ok=True)
    for name in MODELS:
        model, wrapper, source = build(name, types.SimpleNamespace(random_init=True, tiny=False, seed=0))
        mdir = os.path.join(args.models, name)
        if not os.path.exists(os.path.join(mdir, "spec.json")):
            export(name, wrapper, source, mdir)
        # embedfleet
        out = os.path.join(tmp, name + ".npy")
        subprocess.run([args.bin, "embed", "--model", mdir, "--format", "npy", "-o", out, *files], check=True)
        got = read_npy_rows(out)
        # the article's method on the same weights
        proc = PROCESSORS[name]
        ref = []
        for i in range(0, len(files), args.batch):
            imgs = [ImageOps.exif_transpose(Image.open(f)) for f in files[i : i + args.batch]]
            ref.append(torch_embed(name, model, proc, imgs))
        ref = np.concatenate(ref)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1)
        print(f"parity {name} min_cosine={cos.min():.6f} mean_cosine={cos.mean():.6f} n={len(files)}", flush=True)

        a, b = (os.path.join(args.seed_images, f) for f in ("img1.jpg", "img2.jpg"))
        va = torch_embed(name, model, proc, [Image.open(a)])[0]
        vb = torch_embed(name, model, proc, [Image.open(b)])[0]
        article = (float(np.dot(va, vb) / (np.linalg.norm(va) * np.linalg.norm(vb))) + 1) / 2
        res = subprocess.run([args.bin, "similarity", "--model", mdir, "--no-exif-orientation", a, b],
                             check=True, capture_output=True, text=True).stdout
        ours = float(res.split("similarity=")[1].split()[0])
        print(f"similarity {name} embedfleet={ours:.6f} article={article:.6f} abs_diff={abs(ours - article):.6f}", flush=True)
        if cos.min() < 0.999 or abs(ours - article) > 0.001:
            sys.exit(f"parity {name}: below the bar (min cosine 0.999, similarity within 0.001)")


if __name__ == "__main__":
    main()

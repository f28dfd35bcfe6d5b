"""Build the embedding parity fixtures in shared/embed/testdata.

Exports tiny random-init CLIP and DINOv2 models (the real architectures with
small configs, seeded) to testdata/models/<name>/, then embeds fixture images
with the article's own method on the same weights: the Hugging Face processor
and PyTorch, CLIP's image features (get_image_features) and DINOv2's
last_hidden_state mean over all tokens, L2-normalised. It also records the
article's similarity score (cos+1)/2 of ../shared/seed/img1.jpg and img2.jpg.
The Go tests run the same ONNX files through embedfleet and compare.

Usage: python deploy/export/make_model_fixtures.py OUTDIR IMAGEDIR SEEDDIR
"""

import argparse
import json
import os
import types

import numpy as np
import torch
from export import build, export
from make_fixtures import PROCESSORS
from PIL import Image, ImageOps

IMAGES = ["photo_481x321.jpg", "photo_320x480.jpg", "small_100x75.jpg", "gray_300x300.jpg", "exif6_400x300.jpg", "rgba_157x211.png"]


def embed(model_name, model, proc, img):
    with torch.no_grad():
        inputs = proc(images=img, return_tensors="pt")
        if model_name == "clip-vit-b32":
            v = model(**inputs).image_embeds[0]
        else:
            v = model(**inputs).last_hidden_state.mean(dim=1)[0]
    return v.numpy().astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("imagedir")
    ap.add_argument("seeddir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"generator": "deploy/export/make_model_fixtures.py", "models": {}}
    for name in ["clip-vit-b32", "dinov2-base"]:
        opts = types.SimpleNamespace(random_init=True, tiny=True, seed=7)
        model, wrapper, source = build(name, opts)
        spec = export(name, wrapper, source, os.path.join(args.outdir, "models", name))
        proc = PROCESSORS[name]
        cases = []
        for f in IMAGES:
            img = ImageOps.exif_transpose(Image.open(os.path.join(args.imagedir, f)))
            v = embed(name, model, proc, img)
            cases.append({"image": f, "embedding": (v / np.linalg.norm(v)).tolist()})
        # The article's two-image similarity, its code as written (no EXIF
        # handling: Image.open straight into the processor).
        a = embed(name, model, proc, Image.open(os.path.join(args.seeddir, "img1.jpg")))
        b = embed(name, model, proc, Image.open(os.path.join(args.seeddir, "img2.jpg")))
        cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        result["models"][name] = {
            "version": spec["version"],
            "cases": cases,
            "seed_similarity": {"cosine": cos, "score": (cos + 1) / 2},
        }
    with open(os.path.join(args.outdir, "embeddings.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {args.outdir}/embeddings.json")


if __name__ == "__main__":
    main()

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

Then CLIP's text tower, exported from the same seeded CLIPModel as the image
tower: 200 captions embedded by `embedfleet embed --text-file` against
PyTorch's get_text_features on CLIPTokenizerFast's ids, and each caption's
top 10 photos by `embedfleet dev --serve` (the real pipeline: milvus-lite,
GET /v1/search?text=) against PyTorch's vectors in a faiss IndexFlatIP:

  parity clip-vit-b32-text min_cosine=X mean_cosine=Y n=200
  text_top10_same=F text_top1_same=G n=200

Usage: python deploy/export/parity.py --bin bin/embedfleet --images DIR --seed-images DIR --models DIR
"""

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import types
import urllib.parse
import urllib.request

import numpy as np
import torch
import faiss
from export import CONTEXT, build, clip_pair, export, text_extra
from make_fixtures import PROCESSORS
from PIL import Image, ImageOps
from transformers import CLIPTokenizerFast

MODELS = ["clip-vit-b32", "dinov2-base"]


def torch_embed(name, model, proc, images):
    with torch.no_grad():
        inputs = proc(images=images, return_tensors="pt")
        out = model(**inputs)
        v = out.image_embeds if name == "clip-vit-b32" else out.last_hidden_state.mean(dim=1)
    return v.numpy().astype(np.float64)


SUBJECTS = ("cat dog horse bird eagle fish boat car bicycle train airplane tree flower mountain river lake beach "
            "house church bridge tower street city forest desert field snow rock cliff waterfall child man woman "
            "face crowd statue castle road sky cloud sunset island ship garden").split()
MODIFIERS = ("red blue green small large old ancient wooden stone white black colourful misty snowy "
             "sunny dark quiet busy").split()
SCENES = ("in the snow", "on the beach", "at night", "under a blue sky", "near the water", "in a field",
          "in the city", "on a mountain", "in the forest", "at sunset", "in black and white", "from above")
EXTRA = ["a photo of a cat", "two people walking on a path", "Ein Foto von einem Pferd", "一张山的照片",
         "صورة لقارب", "a bird 🐦 on a branch", "the Eiffel Tower", "don't look back!!!", "İstanbul, 1900s",
         "<|endoftext|> an odd caption", "   spaced    out   words  ", "rock'n'roll concert",
         "A VERY LOUD CAPTION", "1234 5678", "café au lait", "a " + "very " * 80 + "long caption"]


def captions(n=200):
    r = random.Random(2026)
    out = list(EXTRA)
    while len(out) < n:
        out.append(f"a {r.choice(['photo', 'picture', 'painting', 'view'])} of a {r.choice(MODIFIERS)} "
                   f"{r.choice(SUBJECTS)} {r.choice(SCENES)}")
    return out[:n]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text_parity(args, files, image_ref, models_dir):
    """CLIP's text tower: embeddings against PyTorch, top 10 against faiss."""
    name = "clip-vit-b32-text"
    full, _, _ = clip_pair(False, 0)
    tdir = os.path.join(models_dir, name)
    if not os.path.exists(os.path.join(tdir, "spec.json")):
        opts = types.SimpleNamespace(random_init=True, tiny=False, seed=0, vocab_dir=None,
                                     pairs_with=os.path.join(models_dir, "clip-vit-b32"))
        extra = text_extra(opts, tdir)
        _, wrapper, source = build(name, opts)
        export(name, wrapper, source, tdir, extra=extra)
    caps = captions()
    tmp = os.path.join(models_dir, ".parity")
    cap_file = os.path.join(tmp, "captions.txt")
    with open(cap_file, "w", encoding="utf-8") as f:
        f.write("\n".join(caps) + "\n")
    out = os.path.join(tmp, name + ".npy")
    subprocess.run([args.bin, "embed", "--model", tdir, "--text-file", cap_file, "--format", "npy", "-o", out], check=True)
    got = read_npy_rows(out)
    tok = CLIPTokenizerFast(vocab_file=os.path.join(tdir, "vocab.json"), merges_file=os.path.join(tdir, "merges.txt"))
    ids = tok(caps, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = full.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).numpy().astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1)
    print(f"parity {name} min_cosine={cos.min():.6f} mean_cosine={cos.mean():.6f} n={len(caps)}", flush=True)

    # PyTorch + faiss: the article's index over the article's image vectors.
    index = faiss.IndexFlatIP(image_ref.shape[1])
    index.add(image_ref.astype(np.float32))
    _, want = index.search(ref.astype(np.float32), 10)
    names = [os.path.basename(f) for f in files]

    # embedfleet: index the photos with the real pipeline, then ask serve.
    port = free_port()
    dev = subprocess.Popen([args.bin, "dev", "--models-dir", models_dir, "--models", "clip-vit-b32",
                            "--text-models", name, "--images", args.images, "--job-size", "32",
                            "--serve", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in dev.stdout:
            if "serving searches" in line:
                break
        else:
            sys.exit("parity: embedfleet dev exited before serving")
        same10 = same1 = 0
        for i, c in enumerate(caps):
            q = urllib.parse.urlencode({"model": "clip-vit-b32", "k": 10, "text": c})
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/search?{q}", timeout=60) as resp:
                hits = json.load(resp)["hits"]
            ours = [os.path.basename(h["uri"]) for h in hits]
            theirs = [names[j] for j in want[i]]
            same10 += ours == theirs
            same1 += ours[:1] == theirs[:1]
        print(f"text_top10_same={same10 / len(caps):.2f} text_top1_same={same1 / len(caps):.2f} n={len(caps)}", flush=True)
    finally:
        dev.terminate()
        dev.wait(timeout=60)
    if cos.min() < 0.99999 or same10 != len(caps):
        sys.exit(f"parity {name}: below the bar (min cosine 0.99999, every top 10 the same)")


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
    clip_ref = None
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
        if name == "clip-vit-b32":
            clip_ref = ref

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
    text_parity(args, files, clip_ref, args.models)


if __name__ == "__main__":
    main()

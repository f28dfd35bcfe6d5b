"""Build the embedding parity fixtures in shared/embed/testdata.

Exports tiny random-init CLIP and DINOv2 models (the real architectures with
small configs, seeded) to testdata/models/<name>/, then embeds fixture images
with the article's own method on the same weights: the Hugging Face processor
and PyTorch, CLIP's image features (get_image_features) and DINOv2's
last_hidden_state mean over all tokens, L2-normalised. It also records the
article's similarity score (cos+1)/2 of ../shared/seed/img1.jpg and img2.jpg.
The Go tests run the same ONNX files through embedfleet and compare.

CLIP's two towers come from one tiny random-init CLIPModel. The text tower
goes to testdata/models/clip-vit-b32-text/ (its spec names the vocabulary's
sha256; the files themselves are installed by deploy/install/deps.sh
clip-vocab, not committed), and text_embeddings.json records, for a set of
captions, PyTorch's get_text_features with CLIPTokenizerFast's ids and the
fixture image each caption ranks first by PyTorch's image features.

Usage: python deploy/export/make_model_fixtures.py OUTDIR IMAGEDIR SEEDDIR VOCABDIR
"""

import argparse
import json
import os
import types

import numpy as np
import torch
from export import CONTEXT, build, clip_pair, export, text_extra
from make_fixtures import PROCESSORS
from PIL import Image, ImageOps
from transformers import CLIPTokenizerFast

CAPTIONS = ["a photo of a cat", "a red car on the street", "two dogs playing in the snow", "Ein Foto von einem Hund",
            "一只猫坐在桌子上", "a bowl of soup 🍜", "", "don't STOP me now!!!", "<|endoftext|> after the end",
            "a very long caption " * 30, "sunset over the mountains, oil painting", "İstanbul at night"]
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
    ap.add_argument("vocabdir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"generator": "deploy/export/make_model_fixtures.py", "models": {}}
    opts = types.SimpleNamespace(random_init=True, tiny=True, seed=7, vocab_dir=args.vocabdir)
    image_vecs = {}
    for name in ["clip-vit-b32", "dinov2-base"]:
        model, wrapper, source = build(name, opts)
        spec = export(name, wrapper, source, os.path.join(args.outdir, "models", name))
        proc = PROCESSORS[name]
        cases = []
        for f in IMAGES:
            img = ImageOps.exif_transpose(Image.open(os.path.join(args.imagedir, f)))
            v = embed(name, model, proc, img)
            cases.append({"image": f, "embedding": (v / np.linalg.norm(v)).tolist()})
            if name == "clip-vit-b32":
                image_vecs[f] = v / np.linalg.norm(v)
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

    # The text tower of the same CLIPModel as the image tower above.
    full, _, _ = clip_pair(True, opts.seed)
    text_dir = os.path.join(args.outdir, "models", "clip-vit-b32-text")
    opts.pairs_with = os.path.join(args.outdir, "models", "clip-vit-b32")
    extra = text_extra(opts, text_dir)
    _, wrapper, source = build("clip-vit-b32-text", opts)
    spec = export("clip-vit-b32-text", wrapper, source, text_dir, extra=extra)
    # Not committed: the Go tests take them from deps.sh clip-vocab's folder.
    for f in ("vocab.json", "merges.txt"):
        os.remove(os.path.join(text_dir, f))
    tok = CLIPTokenizerFast(vocab_file=os.path.join(args.vocabdir, "vocab.json"),
                            merges_file=os.path.join(args.vocabdir, "merges.txt"))
    names = sorted(image_vecs)
    mat = np.stack([image_vecs[n] for n in names])
    cases = []
    for cap in CAPTIONS:
        ids = tok(cap, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
        with torch.no_grad():
            v = full.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])[0]
        v = v.numpy().astype(np.float64)
        v /= np.linalg.norm(v)
        scores = mat @ v
        cases.append({"text": cap, "embedding": v.tolist(), "top_image": names[int(np.argmax(scores))],
                      "cosines": {n: float(c) for n, c in zip(names, scores)}})
    text = {"generator": "deploy/export/make_model_fixtures.py", "model": "clip-vit-b32-text", "version": spec["version"],
            "pairs_with": spec["pairs_with"], "reference": "CLIPModel.get_text_features with CLIPTokenizerFast ids "
            "and attention mask; top_image ranks the clip-vit-b32 cases of embeddings.json", "cases": cases}
    with open(os.path.join(args.outdir, "text_embeddings.json"), "w") as f:
        json.dump(text, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.outdir}/text_embeddings.json")


if __name__ == "__main__":
    main()

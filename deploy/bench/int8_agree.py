"""int8 against fp32 agreement, as `make bench-int8` measures it.

Makes edited copies (a 10% crop each side, 0.6x, JPEG quality 55) of the
first N photos of --images, embeds photos and copies with `embedfleet embed`
under each model's fp32 and int8 exports, and prints per model

  int8 MODEL mean_cosine=.. min_cosine=.. top1_agree=.. top1_fp32=.. top1_int8=.. fp32_img_s=.. int8_img_s=.. n=N

top1: each copy's nearest photo; agree: the same one under both precisions.

Usage: python deploy/bench/int8_agree.py --bin bin/embedfleet --images DIR --models DIR [--n 150]
"""

import argparse
import os
import re
import subprocess
import tempfile

import numpy as np
from PIL import Image


def embed(binary, model, files, out):
    """The vectors of files, L2-normalised, and embed's own img/s."""
    res = subprocess.run([binary, "embed", "--model", model, "--format", "npy", "-o", out, *files], check=True,
                         capture_output=True, text=True)
    rate = float(re.findall(r"([0-9.]+) img/s", res.stderr)[-1])  # the summary line, after any progress lines
    v = np.load(out).astype(np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True), rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--n", type=int, default=150)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="int8-")
    refs, queries = [], []
    for f in sorted(os.listdir(args.images))[: args.n]:
        im = Image.open(os.path.join(args.images, f)).convert("RGB")
        w, h = im.size
        r, q = os.path.join(tmp, "r-" + f), os.path.join(tmp, "q-" + f)
        im.save(r, quality=95)
        im.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((int(w * 0.6), int(h * 0.6))).save(q, quality=55)
        refs.append(r)
        queries.append(q)
    for m in ["clip-vit-b32", "dinov2-base"]:
        v, rate = {}, {}
        for p in ["", "-int8"]:
            d = os.path.join(args.models, m + p)
            (r, r1), (q, r2) = (embed(args.bin, d, refs, os.path.join(tmp, m + p + "-r.npy")),
                                embed(args.bin, d, queries, os.path.join(tmp, m + p + "-q.npy")))
            v[p], rate[p] = (r, q), 2 / (1 / r1 + 1 / r2)  # over all 2N images
        cos = np.concatenate([(v[""][0] * v["-int8"][0]).sum(1), (v[""][1] * v["-int8"][1]).sum(1)])
        t32 = (v[""][1] @ v[""][0].T).argmax(1)
        t8 = (v["-int8"][1] @ v["-int8"][0].T).argmax(1)
        truth = np.arange(len(t32))
        print(f"int8 {m} mean_cosine={cos.mean():.5f} min_cosine={cos.min():.5f} top1_agree={(t32 == t8).mean():.3f} "
              f"top1_fp32={(t32 == truth).mean():.3f} top1_int8={(t8 == truth).mean():.3f} "
              f"fp32_img_s={rate['']:.1f} int8_img_s={rate['-int8']:.1f} n={len(t32)}", flush=True)


if __name__ == "__main__":
    main()

"""Exact against --decode fast, on the vectors, as `make bench-decode` ends.

Embeds the first N photos of --images with `embedfleet embed --decode exact`
and `--decode fast` under each model of --models and prints per model

  decode MODEL fast_vs_exact min_cosine=.. mean_cosine=.. nn_agree=.. exact_img_s=.. fast_img_s=.. n=N

nn_agree: each photo's nearest other photo is the same under both.

Usage: python deploy/bench/decode_agree.py --bin bin/embedfleet --images DIR --models DIR [--n 30]
"""

import argparse
import os
import re
import subprocess
import tempfile

import numpy as np


def embed(binary, model, decode, files, out):
    res = subprocess.run([binary, "embed", "--decode", decode, "--model", model, "--format", "npy", "-o", out, *files],
                         check=True, capture_output=True, text=True)
    rate = float(re.findall(r"([0-9.]+) img/s", res.stderr)[-1])  # the summary line, after any progress lines
    v = np.load(out).astype(np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True), rate


def nearest(v):
    s = v @ v.T
    np.fill_diagonal(s, -9)
    return s.argmax(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    files = [os.path.join(args.images, f) for f in sorted(os.listdir(args.images))[: args.n]]
    tmp = tempfile.mkdtemp(prefix="decode-")
    for m in ["clip-vit-b32", "dinov2-base"]:
        d = os.path.join(args.models, m)
        a, ra = embed(args.bin, d, "exact", files, os.path.join(tmp, m + "-exact.npy"))
        b, rb = embed(args.bin, d, "fast", files, os.path.join(tmp, m + "-fast.npy"))
        cos = (a * b).sum(1)
        print(f"decode {m} fast_vs_exact min_cosine={cos.min():.6f} mean_cosine={cos.mean():.6f} "
              f"nn_agree={(nearest(a) == nearest(b)).mean():.2f} exact_img_s={ra:.1f} fast_img_s={rb:.1f} n={len(files)}", flush=True)


if __name__ == "__main__":
    main()

"""An independent check of `embedfleet bench copydetect --background`'s
figures: from vectors `embedfleet embed --format npy` wrote for the
references, queries and background images, compute with numpy each query's
10 nearest references by cosine, the score normalisation (cosine less beta
times the mean cosine of the query's n nearest background images), and
micro AP and recall at 90% precision over the pooled predictions, raw and
normalised, as deploy/bench/copydetect defines them (ties: misses first).

Usage: python deploy/bench/copies_check.py --bin bin/embedfleet --model clip-vit-b32 --data bin/bench-copies/data [--models-dir DIR]
Prints: check MODEL micro_ap_raw=.. micro_ap_norm=.. recall_p90_raw=.. recall_p90_norm=..
"""

import argparse
import csv
import os
import subprocess
import tempfile

import numpy as np


def embed(bin_, model, models_dir, folder, out):
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    cmd = [bin_, "embed", "--model", model, "--format", "npy", "--out", out] + files
    if models_dir:
        cmd[1:1] = ["--models-dir", models_dir]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    names = [os.path.basename(l.strip()) for l in open(out + ".files.txt")]
    return np.load(out), names


def pooled_metrics(truth, preds):
    # preds: list of (query, ref, score)
    positives = sum(1 for r in truth.values() if r)
    ranked = sorted(((s, (truth[q] != "" and r == truth[q])) for q, r, s in preds),
                    key=lambda t: (-t[0], t[1]))
    found, ap, rp90 = 0, 0.0, 0.0
    for i, (score, hit) in enumerate(ranked):
        if not hit:
            continue
        found += 1
        ap += found / (i + 1)
        nxt_same = i + 1 < len(ranked) and ranked[i + 1][0] == score
        if not nxt_same and found / (i + 1) >= 0.9:
            rp90 = found / positives
    return ap / positives, rp90


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--models-dir", default="")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=3)
    args = ap.parse_args()
    truth = {r["query"]: r["reference"] for r in csv.DictReader(open(os.path.join(args.data, "truth.csv")))}
    with tempfile.TemporaryDirectory() as tmp:
        R, rn = embed(args.bin, args.model, args.models_dir, os.path.join(args.data, "refs"), os.path.join(tmp, "r.npy"))
        Q, qn = embed(args.bin, args.model, args.models_dir, os.path.join(args.data, "queries"), os.path.join(tmp, "q.npy"))
        B, _ = embed(args.bin, args.model, args.models_dir, os.path.join(args.data, "background"), os.path.join(tmp, "b.npy"))
    sims = Q @ R.T
    bias = args.beta * np.sort(Q @ B.T, axis=1)[:, ::-1][:, : args.n].mean(axis=1)
    raw, norm = [], []
    for i, q in enumerate(qn):
        top = np.argsort(-sims[i], kind="stable")[:10]
        for j in top:
            raw.append((q, rn[j], float(sims[i, j])))
            norm.append((q, rn[j], float(sims[i, j] - bias[i])))
    ap_raw, rp_raw = pooled_metrics(truth, raw)
    ap_norm, rp_norm = pooled_metrics(truth, norm)
    print(f"check {args.model} micro_ap_raw={ap_raw:.4f} micro_ap_norm={ap_norm:.4f} recall_p90_raw={rp_raw:.4f} recall_p90_norm={rp_norm:.4f}")


if __name__ == "__main__":
    main()

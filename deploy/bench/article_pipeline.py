"""The article's copy-detection method, on the same weights as embedfleet.

Hugging Face processors and models, one image at a time (or --batch-size N,
a stronger PyTorch baseline), CLIP's get_image_features (image_embeds) or
DINOv2's mean of last_hidden_state, L2-normalised vectors in a faiss
IndexFlatL2, then every query searched. Prints

  article MODEL top1=.. top3=.. recall10=.. micro_ap=.. img_s=.. refs=.. queries=..

(`batched` instead of `article` with --batch-size > 1), where img_s counts
reference and query images embedded per second, on all cores, in eval mode
under no_grad as the article runs. The weights are the full-size random-init
models of `make random-models` (seed 0), rebuilt here from the same seed.

With --device cuda it runs the article's own setting (one GPU) instead, tagged
article_cuda / batched_cuda; the comparison with embedfleet is on the CPU.

Usage: python deploy/bench/article_pipeline.py --data DIR --model clip-vit-b32 [--batch-size 1] [--device cpu]
"""

import argparse
import csv
import json
import os
import sys
import time
import types

import faiss
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
from export import build  # noqa: E402
from make_fixtures import PROCESSORS  # noqa: E402


def metrics(truth, results):
    """truth: query -> reference ('' for none); results: query -> [(ref, score)] best first."""
    with_truth = [q for q, r in truth.items() if r]
    top1 = sum(1 for q in with_truth if results[q][:1] and results[q][0][0] == truth[q]) / len(with_truth)
    top3 = sum(1 for q in with_truth if truth[q] in [r for r, _ in results[q][:3]]) / len(with_truth)
    rec10 = sum(1 for q in with_truth if truth[q] in [r for r, _ in results[q][:10]]) / len(with_truth)
    # Micro AP as DISC21 defines it: every (query, reference, score)
    # prediction pooled and ranked by score; precision at each correct one.
    preds = sorted(((s, q, r) for q, rs in results.items() for r, s in rs), key=lambda x: -x[0])
    hits, ap = 0, 0.0
    for i, (_, q, r) in enumerate(preds, 1):
        if truth.get(q) == r:
            hits += 1
            ap += hits / i
    return top1, top3, rec10, ap / len(with_truth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="make_queries.py output: refs/, queries/, truth.csv")
    ap.add_argument("--model", required=True, choices=sorted(PROCESSORS))
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="cpu", help="cpu (the comparison), or cuda for the article's own GPU setting")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model, _, _ = build(args.model, types.SimpleNamespace(random_init=True, tiny=False, seed=0))
    model = model.to(args.device).eval()
    proc = PROCESSORS[args.model]

    def embed(paths):
        out = []
        for i in range(0, len(paths), args.batch_size):
            imgs = [Image.open(p) for p in paths[i : i + args.batch_size]]
            with torch.no_grad():
                inputs = proc(images=imgs, return_tensors="pt").to(args.device)
                o = model(**inputs)
                v = o.image_embeds if args.model == "clip-vit-b32" else o.last_hidden_state.mean(dim=1)
            out.append(v.cpu().numpy().astype(np.float32))
        v = np.concatenate(out)
        faiss.normalize_L2(v)
        return v

    refs = sorted(os.listdir(os.path.join(args.data, "refs")))
    with open(os.path.join(args.data, "truth.csv")) as f:
        truth = {row["query"]: row["reference"] for row in csv.DictReader(f)}
    queries = sorted(truth)
    embed([os.path.join(args.data, "refs", refs[0])])  # warm-up (CUDA context, allocator), not timed
    start = time.perf_counter()
    rv = embed([os.path.join(args.data, "refs", r) for r in refs])
    qv = embed([os.path.join(args.data, "queries", q) for q in queries])
    img_s = (len(refs) + len(queries)) / (time.perf_counter() - start)
    index = faiss.IndexFlatL2(rv.shape[1])
    index.add(rv)
    dist, idx = index.search(qv, args.k)
    # For unit vectors L2^2 = 2 - 2 cos: report cosine as the score.
    results = {q: [(refs[j], float(1 - d / 2)) for d, j in zip(dist[i], idx[i])] for i, q in enumerate(queries)}
    top1, top3, rec10, micro_ap = metrics(truth, results)
    tag = "article" if args.batch_size == 1 else "batched"
    if args.device != "cpu":
        tag += "_" + args.device.split(":")[0]
    threads = torch.get_num_threads()
    print(f"{tag} {args.model} top1={top1:.4f} top3={top3:.4f} recall10={rec10:.4f} micro_ap={micro_ap:.4f} "
          f"img_s={img_s:.2f} refs={len(refs)} queries={len(queries)} threads={threads}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pipeline": tag, "model": args.model, "top1": top1, "top3": top3, "recall10": rec10,
                       "micro_ap": micro_ap, "img_s": img_s, "refs": len(refs), "queries": len(queries),
                       "device": args.device, "threads": threads, "torch": torch.__version__,
                       "processor": type(proc).__name__}, f)


if __name__ == "__main__":
    main()

"""Print the speed-up lines of `make bench-article` from the JSON results.

  speedup MODEL x=..             embedfleet img/s / the article's (one image at a time)
  speedup_vs_batched MODEL x=..  embedfleet img/s / PyTorch at --batch-size 32
  same_answers MODEL top1_diff=.. top3_diff=..

Usage: python deploy/bench/compare.py DIR   (DIR holds article-*.json, batched-*.json, embedfleet/results.json)
"""

import glob
import json
import os
import sys

d = sys.argv[1]
ours = {r["model"]: r for r in json.load(open(os.path.join(d, "embedfleet", "results.json")))}
for path in sorted(glob.glob(os.path.join(d, "article-*.json"))):
    a = json.load(open(path))
    m = a["model"]
    b = json.load(open(os.path.join(d, f"batched-{m}.json")))
    e = ours[m]
    print(f"speedup {m} x={e['img_s'] / a['img_s']:.2f}")
    print(f"speedup_vs_batched {m} x={e['img_s'] / b['img_s']:.2f}")
    print(f"same_answers {m} top1_diff={abs(e['top1'] - a['top1']):.4f} top3_diff={abs(e['top3'] - a['top3']):.4f}")

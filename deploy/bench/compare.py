"""Print the speed-up lines of `make bench-article` from the JSON results.

  speedup MODEL x=..             embedfleet img/s / the article's (one image at a time)
  speedup_vs_batched MODEL x=..  embedfleet img/s / PyTorch at --batch-size 32
  same_answers MODEL top1_diff=.. top3_diff=..
  speedup MODEL-int8 x=.. top1_diff=..   embedfleet with the int8 model / the article's (when run)

Usage: python deploy/bench/compare.py DIR   (DIR holds article-*.json, batched-*.json, embedfleet/results.json)
"""

import glob
import json
import os
import sys

d = sys.argv[1]
ours = {r["model"]: r for r in json.load(open(os.path.join(d, "embedfleet", "results.json")))}
int8_path = os.path.join(d, "embedfleet-int8", "results.json")
int8 = {r["model"]: r for r in json.load(open(int8_path))} if os.path.exists(int8_path) else {}
for path in sorted(glob.glob(os.path.join(d, "article-*.json"))):
    a = json.load(open(path))
    m = a["model"]
    b = json.load(open(os.path.join(d, f"batched-{m}.json")))
    e = ours[m]
    print(f"speedup {m} x={e['img_s'] / a['img_s']:.2f}")
    print(f"speedup_vs_batched {m} x={e['img_s'] / b['img_s']:.2f}")
    print(f"same_answers {m} top1_diff={abs(e['top1'] - a['top1']):.4f} top3_diff={abs(e['top3'] - a['top3']):.4f}")
    if m in int8:
        q = int8[m]
        print(f"speedup {m}-int8 x={q['img_s'] / a['img_s']:.2f} vs_fp32_x={q['img_s'] / e['img_s']:.2f} "
              f"top1={q['top1']:.4f} top1_diff={abs(q['top1'] - a['top1']):.4f}")

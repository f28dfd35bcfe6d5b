"""Reference preprocessing throughput: the Hugging Face processor on one core.

Reads every image of a folder into memory, then times Image.open + the
processor (CLIPImageProcessor or BitImageProcessor configured as
facebook/dinov2-base), one image per call as the article does, on one core.
Prints `reference MODEL img_s=X n=N` (best of --rounds passes).

Usage: python deploy/bench/hf_preprocess.py --dir DIR --model clip-vit-b32
"""

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))

from make_fixtures import PROCESSORS  # noqa: E402  (the same processor configs)
from PIL import Image  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--model", default="clip-vit-b32", choices=sorted(PROCESSORS))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    names = sorted(os.listdir(args.dir))
    files = [open(os.path.join(args.dir, n), "rb").read() for n in names]
    proc = PROCESSORS[args.model]
    best = 0.0
    for _ in range(args.rounds):
        start = time.perf_counter()
        for b in files:
            proc(images=Image.open(io.BytesIO(b)), return_tensors="np")
        best = max(best, len(files) / (time.perf_counter() - start))
    print(f"reference {args.model} img_s={best:.1f} n={len(files)}")


if __name__ == "__main__":
    main()

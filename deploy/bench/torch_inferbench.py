"""PyTorch inference alone, the counterpart of inferbench (ONNX Runtime alone).

Builds the full-size random-init model (seed 0, as export.py does), then runs
model(pixel_values=x) on random tensors for --seconds per batch size, in eval
mode under no_grad, on --threads threads, and prints

  torch MODEL batch=B threads=T img_s=..

Usage: python deploy/bench/torch_inferbench.py [--models clip-vit-b32,dinov2-base] [--batches 1,32] [--seconds 4] [--threads 16]
"""

import argparse
import os
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
from export import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="clip-vit-b32,dinov2-base")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        model, _, _ = build(name, types.SimpleNamespace(random_init=True, tiny=False, seed=0))
        model.eval()
        for b in (int(x) for x in args.batches.split(",")):
            x = torch.randn(b, 3, 224, 224)
            with torch.no_grad():
                model(pixel_values=x)  # warm-up
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < args.seconds:
                    model(pixel_values=x)
                    n += b
            print(f"torch {name} batch={b} threads={args.threads} img_s={n / (time.perf_counter() - t):.2f}", flush=True)


if __name__ == "__main__":
    main()

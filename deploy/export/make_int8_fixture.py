"""Quantise the committed tiny CLIP fixture to int8, as export.py --int8 does
(ONNX Runtime dynamic quantisation, per-channel int8 weights), into
shared/embed/testdata/models-int8/clip-vit-b32/, checking its vectors against
fp32 on the fixture images. The Go tests open it, embed with it and refuse
it under a spec that says another precision.

Its sibling models-int8/clip-vit-b32-qattention is what export.py --int8
writes today (the fused graph quantised, attention in QAttention):
  python deploy/export/export.py --model clip-vit-b32 --random-init --tiny \
    --seed 7 --int8 --int8-min-cosine 0.999 \
    --calib-images shared/imageprep/testdata/images \
    --out shared/embed/testdata/models-int8/clip-vit-b32-qattention

Usage: python deploy/export/make_int8_fixture.py
"""

import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort
from export import sha256_file
from make_fixtures import PROCESSORS
from make_model_fixtures import IMAGES
from onnxruntime.quantization import QuantType, quantize_dynamic
from PIL import Image, ImageOps

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SRC = os.path.join(ROOT, "shared", "embed", "testdata", "models", "clip-vit-b32")
OUT = os.path.join(ROOT, "shared", "embed", "testdata", "models-int8", "clip-vit-b32")


def main():
    os.makedirs(OUT, exist_ok=True)
    q = os.path.join(OUT, "model.onnx")
    quantize_dynamic(os.path.join(SRC, "model.onnx"), q, weight_type=QuantType.QInt8, per_channel=True)
    imgs = [ImageOps.exif_transpose(Image.open(os.path.join(ROOT, "shared", "imageprep", "testdata", "images", f))).convert("RGB")
            for f in IMAGES]
    x = PROCESSORS["clip-vit-b32"](images=imgs, return_tensors="np")["pixel_values"].astype(np.float32)
    run = lambda p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(["image_embeds"], {"pixel_values": x})[0]
    a, b = run(os.path.join(SRC, "model.onnx")), run(q)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = (a * b).sum(1)
    with open(os.path.join(SRC, "spec.json")) as f:
        spec = json.load(f)
    spec["version"] = "sha256:" + sha256_file(q)
    spec["precision"] = "int8"
    spec["source"] = {"quantized_from": spec["source"], "method": "onnxruntime quantize_dynamic QInt8 per_channel",
                      "min_cosine_to_fp32": round(float(cos.min()), 6)}
    with open(os.path.join(OUT, "spec.json"), "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    print(f"int8 fixture {OUT}: cosine to fp32 min={cos.min():.6f} over {len(cos)} images", file=sys.stderr)


if __name__ == "__main__":
    main()

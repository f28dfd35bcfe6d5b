"""Export an image encoder to ONNX plus the spec.json that embedfleet reads.

  clip-vit-b32  CLIPVisionModelWithProjection -> output "image_embeds"
                (equal to CLIPModel.get_image_features, as in the article)
  dinov2-base   Dinov2Model -> output "last_hidden_state" (embedfleet mean-pools
                all tokens, CLS + patches, as the article does)

Input "pixel_values" float32 [batch, 3, 224, 224]; only the batch axis is
dynamic (a fixed 224x224 input avoids the bicubic position-embedding
interpolation that ONNX Runtime once refused). Before writing, it runs ONNX
Runtime on a random batch and checks the outputs against PyTorch.

Weights come from one of:
  --hf-repo REPO --revision REV   a Hugging Face checkpoint (pin the revision)
  --random-init [--tiny]          the real architecture built from its config
                                  with seeded random weights, no download;
                                  --tiny shrinks it for test fixtures

Usage:
  python deploy/export/export.py --model clip-vit-b32 --random-init --out DIR
  python deploy/export/export.py --model dinov2-base --hf-repo facebook/dinov2-base --revision REV --out DIR
Writes DIR/model.onnx and DIR/spec.json.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    Dinov2Model,
)

PREPROCESS = {
    "clip-vit-b32": {
        "shortest_edge": 224,
        "crop_height": 224,
        "crop_width": 224,
        "interpolation": "bicubic",
        "rescale_factor": 1 / 255,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
    "dinov2-base": {
        "shortest_edge": 256,
        "crop_height": 224,
        "crop_width": 224,
        "interpolation": "bicubic",
        "rescale_factor": 1 / 255,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
}


def clip_config(tiny):
    if tiny:
        return CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            patch_size=32, image_size=224, projection_dim=16,
        )
    # openai/clip-vit-base-patch32's vision tower.
    return CLIPVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        patch_size=32, image_size=224, projection_dim=512, hidden_act="quick_gelu",
    )


def dinov2_config(tiny):
    if tiny:
        return Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            patch_size=14, image_size=518, mlp_ratio=4,
        )
    # facebook/dinov2-base.
    return Dinov2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14,
        image_size=518, mlp_ratio=4, layerscale_value=1.0,
    )


class ClipImageEmbeds(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).image_embeds


class DinoTokens(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


class Float16(torch.nn.Module):
    """fp16 weights and arithmetic behind float32 inputs and outputs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner.half()

    def forward(self, pixel_values):
        return self.inner(pixel_values.half()).float()


def build(model_name, args):
    if args.random_init:
        torch.manual_seed(args.seed)
        if model_name == "clip-vit-b32":
            m = CLIPVisionModelWithProjection(clip_config(args.tiny))
        else:
            m = Dinov2Model(dinov2_config(args.tiny))
        source = {"random_init": True, "seed": args.seed, "tiny": bool(args.tiny)}
    else:
        if not args.hf_repo or not args.revision:
            sys.exit("export: --hf-repo and --revision (a pinned commit) are required without --random-init")
        cls = CLIPVisionModelWithProjection if model_name == "clip-vit-b32" else Dinov2Model
        m = cls.from_pretrained(args.hf_repo, revision=args.revision)
        source = {"hf_repo": args.hf_repo, "revision": args.revision}
    m.eval()
    wrapper = ClipImageEmbeds(m) if model_name == "clip-vit-b32" else DinoTokens(m)
    return m, wrapper, source


def spec_for(model_name, dim, onnx_sha, source, fp16):
    spec = {
        "name": model_name,
        "version": "sha256:" + onnx_sha,
        "onnx": "model.onnx",
        "input": "pixel_values",
        "normalized": False,
        "dim": dim,
        "preprocess": PREPROCESS[model_name],
        "source": source,
        "precision": "fp16" if fp16 else "fp32",
    }
    if model_name == "clip-vit-b32":
        spec.update({"output": "image_embeds", "output_kind": "embeds"})
    else:
        spec.update({"output": "last_hidden_state", "output_kind": "tokens", "pooling": "mean"})
    return spec


def export(model_name, wrapper, source, out, opset=17, fp16=False):
    """Write out/model.onnx and out/spec.json for wrapper; return the spec."""
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    example = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out_name = "image_embeds" if model_name == "clip-vit-b32" else "last_hidden_state"
    with torch.no_grad():
        want = wrapper(example).numpy()
        exported = Float16(wrapper) if fp16 else wrapper
        kw = dict(input_names=["pixel_values"], output_names=[out_name],
                  dynamic_axes={"pixel_values": {0: "batch"}, out_name: {0: "batch"}}, opset_version=opset)
        try:
            torch.onnx.export(exported, (example,), onnx_path, dynamo=False, **kw)
        except Exception as e:  # newer torch may drop the TorchScript exporter
            print(f"export: TorchScript exporter failed ({e}); using the dynamo exporter", file=sys.stderr)
            torch.onnx.export(exported, (example,), onnx_path, dynamo=True, external_data=False, **kw)

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = sess.run([out_name], {"pixel_values": example.numpy()})[0]
    a, b = want.reshape(2, -1), got.reshape(2, -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    limit = 0.999 if fp16 else 0.99999
    if cos.min() < limit:
        sys.exit(f"export: ONNX Runtime output differs from PyTorch (min cosine {cos.min():.6f} < {limit})")

    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    dim = got.shape[-1]
    spec = spec_for(model_name, int(dim), sha, source, fp16)
    with open(os.path.join(out, "spec.json"), "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    size = os.path.getsize(onnx_path)
    print(f"export {model_name} dim={dim} onnx={onnx_path} bytes={size} sha256={sha[:12]} min_cosine_vs_torch={cos.min():.7f}")
    return spec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(PREPROCESS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="with --random-init: a small config for test fixtures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-repo")
    ap.add_argument("--revision")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--fp16", action="store_true", help="fp16 weights, float32 inputs and outputs")
    args = ap.parse_args()
    if args.tiny and not args.random_init:
        sys.exit("export: --tiny needs --random-init")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    _, wrapper, source = build(args.model, args)
    export(args.model, wrapper, source, args.out, args.opset, args.fp16)


if __name__ == "__main__":
    main()

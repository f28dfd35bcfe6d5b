"""Export an encoder to ONNX plus the spec.json that embedfleet reads.

  clip-vit-b32       CLIPVisionModelWithProjection -> output "image_embeds"
                     (equal to CLIPModel.get_image_features, as in the article)
  clip-vit-b32-text  CLIPTextModelWithProjection -> output "text_embeds"
                     (equal to CLIPModel.get_text_features), input "input_ids"
                     int64 [batch, 77], with CLIP's vocab.json and merges.txt
  dinov2-base        Dinov2Model -> output "last_hidden_state" (embedfleet mean-pools
                     all tokens, CLS + patches, as the article does)

Image input "pixel_values" float32 [batch, 3, 224, 224]; only the batch axis
is dynamic (a fixed 224x224 input avoids the bicubic position-embedding
interpolation that ONNX Runtime once refused). Before writing, it runs ONNX
Runtime on a random batch and checks the outputs against PyTorch.

Weights come from one of:
  --hf-repo REPO --revision REV   a Hugging Face checkpoint (pin the revision)
  --random-init [--tiny]          the real architecture built from its config
                                  with seeded random weights, no download;
                                  --tiny shrinks it for test fixtures. CLIP's
                                  two towers come from one CLIPModel, so one
                                  seed makes a matching pair.

A text tower names the image tower it pairs with: --pairs-with DIR, the
folder of that image model's export (its spec.json gives name and version).
Its tokenizer files are the checkpoint's (--hf-repo) or, for --random-init,
the vocabulary deploy/install/deps.sh clip-vocab installs (--vocab-dir,
default $EMBEDFLEET_CLIP_VOCAB).

fp32 graphs then get their self-attention fused into ONNX Runtime's
com.microsoft.Attention (deploy/export/fuse_attention.py: one packed QKV
product and the fused kernel; the model is exported with Hugging Face's
eager attention so the pattern is the plain one), and the fused graph is
checked against PyTorch again; --no-fuse-attention keeps the plain graph.
int8 exports quantise the fused graph (its Attention becomes
com.microsoft.QAttention), which ran faster than the quantised plain graph
at the same agreement (docs/benchmarks.md).

--int8 quantises the exported graph with ONNX Runtime (dynamic, int8
weights per channel, activations quantised at run time: MatMulInteger and
DynamicQuantizeLinear, which AVX-512 VNNI runs fast) and keeps it only when
its vectors stay at cosine >= --int8-min-cosine (0.99) to fp32 on held-back
inputs: the photos of --calib-images (the processor's tensors), else seeded
random ones. The spec says precision int8.

Usage:
  python deploy/export/export.py --model clip-vit-b32 --random-init --out DIR
  python deploy/export/export.py --model clip-vit-b32-text --random-init --pairs-with DIR --out DIR2
  python deploy/export/export.py --model dinov2-base --hf-repo facebook/dinov2-base --revision REV --out DIR
Writes DIR/model.onnx and DIR/spec.json (and, for text, vocab.json and merges.txt).
"""

import argparse
import hashlib
import json
import os
import sys

import shutil

import numpy as np
import onnxruntime as ort
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizerFast,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    Dinov2Model,
)

# CLIP's tokenizer ids (openai/clip-vit-base-patch32): a random-init text
# config must carry them, or the tower pools the wrong token.
BOS, EOS, PAD = 49406, 49407, 49407
CONTEXT = 77

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
    "clip-vit-b32-text": None,
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


def clip_text_config(tiny):
    ids = dict(vocab_size=49408, max_position_embeddings=CONTEXT, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    if tiny:
        return CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              projection_dim=16, **ids)
    # openai/clip-vit-base-patch32's text tower.
    return CLIPTextConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                          projection_dim=512, hidden_act="quick_gelu", **ids)


def clip_pair(tiny, seed):
    """Both CLIP towers of one seeded random-init CLIPModel."""
    torch.manual_seed(seed)
    vision, text = clip_config(tiny), clip_text_config(tiny)
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                     projection_dim=vision.projection_dim)
    full = CLIPModel(cfg).eval()
    v = CLIPVisionModelWithProjection(cfg.vision_config)
    v.vision_model.load_state_dict(full.vision_model.state_dict())
    v.visual_projection.load_state_dict(full.visual_projection.state_dict())
    t = CLIPTextModelWithProjection(cfg.text_config)
    t.text_model.load_state_dict(full.text_model.state_dict())
    t.text_projection.load_state_dict(full.text_projection.state_dict())
    return full, v.eval(), t.eval()


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


class ClipTextEmbeds(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).text_embeds


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

    def forward(self, x):
        if x.is_floating_point():
            x = x.half()
        return self.inner(x).float()


def eager_attention(m):
    """Export Hugging Face's eager attention rather than SDPA: the same
    arithmetic, written as the plain products and softmax that
    fuse_attention.py recognises (SDPA's export splits the scale over q and
    k)."""
    for mod in m.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = "eager"


def build(model_name, args):
    if args.random_init:
        source = {"random_init": True, "seed": args.seed, "tiny": bool(args.tiny)}
        if model_name.startswith("clip-vit-b32"):
            _, vision, text = clip_pair(args.tiny, args.seed)
            m = text if model_name == "clip-vit-b32-text" else vision
        else:
            torch.manual_seed(args.seed)
            m = Dinov2Model(dinov2_config(args.tiny))
    else:
        if not args.hf_repo or not args.revision:
            sys.exit("export: --hf-repo and --revision (a pinned commit) are required without --random-init")
        cls = {"clip-vit-b32": CLIPVisionModelWithProjection, "clip-vit-b32-text": CLIPTextModelWithProjection,
               "dinov2-base": Dinov2Model}[model_name]
        m = cls.from_pretrained(args.hf_repo, revision=args.revision)
        source = {"hf_repo": args.hf_repo, "revision": args.revision}
    m.eval()
    eager_attention(m)
    wrapper = {"clip-vit-b32": ClipImageEmbeds, "clip-vit-b32-text": ClipTextEmbeds, "dinov2-base": DinoTokens}[model_name](m)
    return m, wrapper, source


def sample_ids(n, seed=1):
    """n token sequences shaped like the tokenizer's: start, words, end, padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, CONTEXT), PAD, dtype=torch.int64)
    for i in range(n):
        k = int(torch.randint(1, CONTEXT - 1, (1,), generator=g))
        ids[i, 0] = BOS
        ids[i, 1:k] = torch.randint(0, BOS, (k - 1,), generator=g)
        ids[i, k] = EOS
    return ids


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_tokenizer(args, out):
    """Put vocab.json and merges.txt beside the text model; return their checksums."""
    if args.random_init:
        src = args.vocab_dir or os.environ.get("EMBEDFLEET_CLIP_VOCAB")
        if not src:
            sys.exit("export: a random-init text tower needs CLIP's vocabulary: run deploy/install/deps.sh clip-vocab "
                     "and pass --vocab-dir (or set EMBEDFLEET_CLIP_VOCAB)")
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    else:
        tok = CLIPTokenizerFast.from_pretrained(args.hf_repo, revision=args.revision)
        tok.save_vocabulary(out)
    return sha256_file(os.path.join(out, "vocab.json")), sha256_file(os.path.join(out, "merges.txt"))


def spec_for(model_name, dim, onnx_sha, source, fp16):
    spec = {
        "name": model_name,
        "version": "sha256:" + onnx_sha,
        "onnx": "model.onnx",
        "input": "pixel_values",
        "normalized": False,
        "dim": dim,
        "source": source,
        "precision": "fp16" if fp16 else "fp32",
    }
    if PREPROCESS[model_name]:
        spec["preprocess"] = PREPROCESS[model_name]
    if model_name == "clip-vit-b32":
        spec.update({"output": "image_embeds", "output_kind": "embeds"})
    elif model_name == "clip-vit-b32-text":
        spec.update({"kind": "text", "input": "input_ids", "output": "text_embeds", "output_kind": "embeds"})
    else:
        spec.update({"output": "last_hidden_state", "output_kind": "tokens", "pooling": "mean"})
    return spec


OUTPUTS = {"clip-vit-b32": "image_embeds", "clip-vit-b32-text": "text_embeds", "dinov2-base": "last_hidden_state"}


def held_back(model_name, calib_dir, n=16):
    """Inputs the int8 check runs: processor tensors of photos, or seeded noise."""
    if model_name == "clip-vit-b32-text":
        return sample_ids(n, seed=3).numpy()
    if calib_dir:
        from make_fixtures import PROCESSORS
        from PIL import Image
        files = sorted(os.listdir(calib_dir))[-n:]  # the last ones: not what a calibration would see first
        imgs = [Image.open(os.path.join(calib_dir, f)).convert("RGB") for f in files]
        return PROCESSORS[model_name](images=imgs, return_tensors="np")["pixel_values"].astype(np.float32)
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(3)).numpy()


def pooled(model_name, out):
    v = out.mean(axis=1) if model_name == "dinov2-base" else out
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def quantize(model_name, out, calib_dir, min_cos):
    """Replace out/model.onnx by its dynamic int8 quantisation, if it agrees with fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    fp32 = os.path.join(out, "model.fp32.onnx")
    q = os.path.join(out, "model.onnx")
    os.replace(q, fp32)
    # The fused graph's com.microsoft ops defeat ONNX shape inference; every
    # tensor they leave untyped is float32.
    quantize_dynamic(fp32, q, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    x = held_back(model_name, calib_dir)
    in_name = "input_ids" if model_name == "clip-vit-b32-text" else "pixel_values"
    out_name = OUTPUTS[model_name]
    a = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run([out_name], {in_name: x})[0]
    # As the engine runs it: on x86-64 without VNNI ONNX Runtime's default
    # int8 kernel saturates (16-bit sums of u8*s8 pairs), and embedfleet asks
    # for the exact one there (shared/embed/int8cpu.go); with VNNI both are
    # exact, so the gate measures the file, not this CPU's fast path.
    so = ort.SessionOptions()
    so.add_session_config_entry("session.x64quantprecision", "1")
    b = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"]).run([out_name], {in_name: x})[0]
    cos = (pooled(model_name, a) * pooled(model_name, b)).sum(1)
    os.remove(fp32)
    if cos.min() < min_cos:
        os.remove(q)
        sys.exit(f"export: the int8 model's vectors are at cosine {cos.min():.5f} to fp32 (< {min_cos}) on {len(x)} held-back inputs: refused")
    print(f"export int8 {model_name}: cosine to fp32 min={cos.min():.6f} mean={cos.mean():.6f} over {len(x)} held-back inputs")
    return cos


def export(model_name, wrapper, source, out, opset=17, fp16=False, extra=None, int8=None, fuse=True):
    """Write out/model.onnx and out/spec.json for wrapper; return the spec.
    extra: fields to add to the spec (a text model's tokenizer and pairs_with).
    int8: (calib_dir, min_cos) to quantise the graph after the fp32 check.
    fuse: rewrite self-attention into com.microsoft.Attention (not for
    fp16), checked against PyTorch like the plain graph, before any int8
    quantisation."""
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    text = model_name == "clip-vit-b32-text"
    in_name = "input_ids" if text else "pixel_values"
    example = sample_ids(2) if text else torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out_name = OUTPUTS[model_name]
    with torch.no_grad():
        want = wrapper(example).numpy()
        exported = Float16(wrapper) if fp16 else wrapper
        kw = dict(input_names=[in_name], output_names=[out_name],
                  dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}}, opset_version=opset)
        try:
            torch.onnx.export(exported, (example,), onnx_path, dynamo=False, **kw)
        except Exception as e:  # newer torch may drop the TorchScript exporter
            print(f"export: TorchScript exporter failed ({e}); using the dynamo exporter", file=sys.stderr)
            torch.onnx.export(exported, (example,), onnx_path, dynamo=True, external_data=False, **kw)

    # A batch of another size than the export's example: the batch axis
    # must really be dynamic.
    check = sample_ids(5, seed=2) if text else torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = wrapper(check).numpy()
    limit = 0.999 if fp16 else 0.99999

    def against_torch(what):
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        got = sess.run([out_name], {in_name: check.numpy()})[0]
        a, b = want.reshape(len(check), -1), got.reshape(len(check), -1)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        if cos.min() < limit:
            sys.exit(f"export: ONNX Runtime output of the {what} graph differs from PyTorch (min cosine {cos.min():.6f} < {limit})")
        return got, cos

    got, cos = against_torch("exported")
    fused = 0
    if fuse and not fp16:
        import onnx
        from fuse_attention import fuse as fuse_attention
        g = onnx.load(onnx_path)
        fused = fuse_attention(g)
        if fused:
            onnx.save(g, onnx_path)
            got, cos = against_torch(f"fused ({fused} attention blocks)")

    if int8 is not None:
        quantize(model_name, out, *int8)
    sha = sha256_file(onnx_path)
    dim = got.shape[-1]
    spec = spec_for(model_name, int(dim), sha, source, fp16)
    spec.update(extra or {})
    if int8 is not None:
        spec["precision"] = "int8"
    with open(os.path.join(out, "spec.json"), "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    size = os.path.getsize(onnx_path)
    print(f"export {model_name} dim={dim} onnx={onnx_path} bytes={size} sha256={sha[:12]} min_cosine_vs_torch={cos.min():.7f} attention_fused={fused}")
    return spec


def text_extra(args, out):
    """The tokenizer and pairs_with fields of a text tower's spec."""
    if not args.pairs_with:
        sys.exit("export: a text tower needs --pairs-with DIR, the export of the image tower it pairs with")
    with open(os.path.join(args.pairs_with, "spec.json")) as f:
        image = json.load(f)
    os.makedirs(out, exist_ok=True)
    vsha, msha = write_tokenizer(args, out)
    return {
        "tokenizer": {"type": "clip-bpe", "vocab": "vocab.json", "merges": "merges.txt", "context_length": CONTEXT,
                      "vocab_sha256": vsha, "merges_sha256": msha},
        "pairs_with": {"name": image["name"], "version": image["version"]},
    }


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
    ap.add_argument("--pairs-with", help="text towers: the folder of the image tower's export")
    ap.add_argument("--no-fuse-attention", action="store_true",
                    help="keep the exporter's attention ops (by default fp32 and int8 graphs get com.microsoft.Attention, QAttention once quantised)")
    ap.add_argument("--int8", action="store_true", help="quantise to int8 (dynamic, per-channel weights)")
    ap.add_argument("--int8-min-cosine", type=float, default=0.99, help="with --int8: the least cosine to fp32 kept")
    ap.add_argument("--calib-images", help="with --int8: photos to check the int8 vectors on (default: seeded noise)")
    ap.add_argument("--vocab-dir", help="random-init text towers: vocab.json and merges.txt (default $EMBEDFLEET_CLIP_VOCAB)")
    args = ap.parse_args()
    if args.tiny and not args.random_init:
        sys.exit("export: --tiny needs --random-init")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    _, wrapper, source = build(args.model, args)
    extra = text_extra(args, args.out) if args.model == "clip-vit-b32-text" else None
    if args.int8 and args.fp16:
        sys.exit("export: --int8 and --fp16 are exclusive")
    int8 = (args.calib_images, args.int8_min_cosine) if args.int8 else None
    export(args.model, wrapper, source, args.out, args.opset, args.fp16, extra, int8, fuse=not args.no_fuse_attention)


if __name__ == "__main__":
    main()

"""What ONNX Runtime makes of exported graphs, plain or with fused attention.

For each ONNX file: the node count and the Attention nodes once an ONNX
Runtime session has optimised the graph (as embedfleet's sessions do), and
what ONNX Runtime's own transformer optimizer fuses in it.

  python deploy/bench/fusion_graphs.py --model-type clip A.onnx [B.onnx ...]

Make the plain graph with `export.py --no-fuse-attention`. Prints one
`graph FILE nodes=.. attention=.. ort_optimizer_fuses={..}` line per file.
"""

import argparse
import collections
import os
import tempfile

import onnx
import onnxruntime as ort
from onnxruntime.transformers import optimizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="vit", help="onnxruntime.transformers optimizer model_type (vit, clip, bert)")
    ap.add_argument("--num-heads", type=int, default=12)
    ap.add_argument("--hidden-size", type=int, default=768)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    for f in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
            so.log_severity_level = 3
            ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
        o = optimizer.optimize_model(f, model_type=args.model_type, num_heads=args.num_heads,
                                     hidden_size=args.hidden_size, opt_level=0)
        fused = {k: v for k, v in o.get_fused_operator_statistics().items() if v}
        print(f"graph {f} nodes={sum(ops.values())} attention={ops['Attention']} ort_optimizer_fuses={fused}")


if __name__ == "__main__":
    main()

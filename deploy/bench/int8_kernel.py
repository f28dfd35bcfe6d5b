"""What ONNX Runtime's exact int8 kernel costs against its default one.

On x86-64 cores without VNNI, ONNX Runtime's default u8s8 matrix kernel adds
pairs of 8-bit products in 16-bit lanes, which can saturate; the session
setting session.x64quantprecision=1 selects an exact kernel, which embedfleet
uses there for int8 models (shared/embed/int8cpu.go). This builds a stack of
transformer-sized MLP blocks (768 -> 3072 -> 768, residual, weights drawn like
a ViT's initialisation), quantises it as export.py --int8 does (dynamic,
per-channel QInt8 weights), and times fp32, int8 with the default kernel and
int8 with the exact one, interleaved, on the same inputs. It prints

  int8_kernel rows=.. layers=.. threads=.. fp32_ms=.. int8_default_ms=.. int8_exact_ms=.. exact_vs_default_x=.. exact_vs_fp32_x=.. min_cos_default=.. min_cos_exact=..

exact_vs_default_x is the default kernel's time over the exact one's (below
1 means the exact kernel is slower); min_cos_* is the lowest row cosine of
the int8 outputs to fp32's. On a VNNI core both int8 kernels are exact and
should time alike.

  python deploy/bench/int8_kernel.py [--rows 400] [--layers 4] [--threads 2] [--rounds 5]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic


def build(path, layers, hidden, inner, rng):
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w1 = rng.normal(0, 0.02, (hidden, inner)).astype(np.float32)
        w2 = rng.normal(0, 0.02, (inner, hidden)).astype(np.float32)
        inits += [numpy_helper.from_array(w1, f"w1_{i}"), numpy_helper.from_array(w2, f"w2_{i}")]
        nodes += [
            helper.make_node("MatMul", [prev, f"w1_{i}"], [f"h_{i}"]),
            helper.make_node("Relu", [f"h_{i}"], [f"r_{i}"]),
            helper.make_node("MatMul", [f"r_{i}", f"w2_{i}"], [f"o_{i}"]),
            helper.make_node("Add", [prev, f"o_{i}"], [f"y_{i}"]),
        ]
        prev = f"y_{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", hidden])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", hidden])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def session(path, threads, exact):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if exact:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def timed(sess, x, reps):
    sess.run(["y"], {"x": x})
    t = time.perf_counter()
    for _ in range(reps):
        sess.run(["y"], {"x": x})
    return (time.perf_counter() - t) / reps * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=400, help="rows per run (a ViT-B/32 image is 50 tokens)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is printed")
    ap.add_argument("--reps", type=int, default=5, help="runs per timing")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        fp, q = os.path.join(d, "fp32.onnx"), os.path.join(d, "int8.onnx")
        build(fp, a.layers, 768, 3072, rng)
        quantize_dynamic(fp, q, weight_type=QuantType.QInt8, per_channel=True)
        x = rng.normal(0, 1, (a.rows, 768)).astype(np.float32)
        sessions = {"fp32": session(fp, a.threads, False), "default": session(q, a.threads, False),
                    "exact": session(q, a.threads, True)}
        out = {k: s.run(["y"], {"x": x})[0] for k, s in sessions.items()}
        times = {k: [] for k in sessions}
        for _ in range(a.rounds):
            for k, s in sessions.items():
                times[k].append(timed(s, x, a.reps))
    med = {k: float(np.median(v)) for k, v in times.items()}

    def min_cos(b):
        f = out["fp32"]
        return float(((f * b).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(b, axis=1)).min())

    print(f"int8_kernel rows={a.rows} layers={a.layers} threads={a.threads} fp32_ms={med['fp32']:.1f} "
          f"int8_default_ms={med['default']:.1f} int8_exact_ms={med['exact']:.1f} "
          f"exact_vs_default_x={med['default'] / med['exact']:.2f} exact_vs_fp32_x={med['fp32'] / med['exact']:.2f} "
          f"min_cos_default={min_cos(out['default']):.6f} min_cos_exact={min_cos(out['exact']):.6f}")


if __name__ == "__main__":
    main()

"""Write the tiny ONNX model that the ONNX Runtime smoke test loads.

The model is y = x @ W + b followed by ReLU, with a dynamic batch axis:
input "x" float32 [N, 4], output "y" float32 [N, 3]. W and b are fixed small
integers so the expected output can be written down by hand in the Go test.

Usage: python deploy/export/tiny_affine.py OUT.onnx   (needs: pip install onnx)
"""

import sys

import onnx
from onnx import TensorProto, helper

W = [
    [1.0, 0.0, -1.0],
    [2.0, 1.0, 0.0],
    [0.0, -1.0, 3.0],
    [0.5, 0.5, 0.5],
]
B = [0.25, -0.5, 1.0]


def build() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], [v for row in W for v in row])
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], B)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["lin"]),
        helper.make_node("Relu", ["lin"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny_affine", [x], [y], initializer=[w, b])
    model = helper.make_model(
        graph,
        producer_name="embedfleet",
        opset_imports=[helper.make_opsetid("", 17)],
    )
    # ONNX Runtime 1.24 reads IR version 10; pin it so a newer onnx package
    # does not write a file the pinned runtime refuses.
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tiny_affine.py OUT.onnx")
    onnx.save(build(), sys.argv[1])

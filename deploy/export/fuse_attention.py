"""Fuse the self-attention blocks of an exported ViT into ONNX Runtime's
com.microsoft.Attention: one packed QKV product and its fused kernel in
place of three projections, reshapes, transposes, two batched products and
a softmax.

It matches what the TorchScript exporter writes for Hugging Face's eager
attention (CLIP and DINOv2 alike):

    q = Add(bias_q, MatMul(x, Wq))  -> Reshape [B,S,H,D] -> Transpose (0,2,1,3)
    k = Add(bias_k, MatMul(x, Wk))  -> Reshape           -> Transpose (0,2,3,1)
    v = Add(bias_v, MatMul(x, Wv))  -> Reshape           -> Transpose (0,2,1,3)
    p = Softmax(Mul(MatMul(q, k), scale), axis=-1) [-> Cast -> Cast]
    o = Reshape(Transpose(MatMul(p, v), (0,2,1,3)), [B,S,H*D])

and rewrites it to o = Attention(x, [Wq|Wk|Wv], [bq|bk|bv]) with
num_heads=H and the graph's own scale. A block that differs in any way is
left as it is; the caller checks the result against PyTorch.

ONNX Runtime's own transformer optimizer fuses CLIP's exported attention
but not DINOv2's; this pass handles both the same way.

  python deploy/export/fuse_attention.py IN.onnx OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Graph:
    def __init__(self, model):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.reindex()

    def reindex(self):
        self.prod = {o: n for n in self.g.node for o in n.output}
        self.cons = {}
        for n in self.g.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)

    def producer(self, name, op):
        n = self.prod.get(name)
        return n if n is not None and n.op_type == op else None

    def const(self, name):
        """The value of an initializer or Constant node output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.prod.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        if n is not None and n.op_type == "Identity":
            return self.const(n.input[0])
        return None

    def only_consumer(self, name):
        c = self.cons.get(name, [])
        return c[0] if len(c) == 1 else None


def perm(node):
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def projection(G, t_name, want_perm):
    """For Transpose(Reshape(Add(bias, MatMul(x, W)))): (x, W, bias, heads,
    head_dim), else None."""
    tr = G.producer(t_name, "Transpose")
    if tr is None or perm(tr) != want_perm:
        return None
    rs = G.producer(tr.input[0], "Reshape")
    if rs is None:
        return None
    add = G.producer(rs.input[0], "Add")
    if add is None:
        return None
    mm, bias = None, None
    for i, j in ((0, 1), (1, 0)):
        m = G.producer(add.input[i], "MatMul")
        b = G.const(add.input[j])
        if m is not None and b is not None:
            mm, bias = m, b
    if mm is None:
        return None
    w = G.const(mm.input[1])
    if w is None or w.ndim != 2 or bias.ndim != 1 or bias.shape[0] != w.shape[1]:
        return None
    # The head count and size are the reshape's last two axes: constants
    # after the batch and sequence, which come from Shape.
    shape = reshape_target(G, rs.input[1])
    if shape is None or len(shape) != 4:
        return None
    heads, head_dim = shape[2], shape[3]
    if heads == -1 and head_dim > 0 and w.shape[1] % head_dim == 0:
        heads = w.shape[1] // head_dim  # CLIP writes [B, S, -1, D]
    if heads <= 0 or head_dim <= 0 or heads * head_dim != w.shape[1]:
        return None
    return mm.input[0], w, bias, heads, head_dim


def reshape_target(G, name):
    """A Reshape's target shape with -1/0 left as they are, or the constant
    entries of a Concat of scalars ([B, S, H, D] built from Shape for B, S)."""
    c = G.const(name)
    if c is not None:
        return [int(v) for v in c.reshape(-1)]
    cat = G.producer(name, "Concat")
    if cat is None:
        return None
    out = []
    for i in cat.input:
        v = G.const(i)
        if v is None:
            out.append(-1)  # dynamic (batch or sequence)
        else:
            out.extend(int(x) for x in v.reshape(-1))
    return out


def fuse(model):
    """Rewrite every matching attention block; return the count."""
    G = Graph(model)
    fused = 0
    replace = {}  # the output reshape's output name -> the fused node
    new_inits = []
    for sm in [n for n in G.g.node if n.op_type == "Softmax"]:
        axis = next((a.i for a in sm.attribute if a.name == "axis"), -1)
        if axis not in (-1, 3):
            continue
        scaled = G.prod.get(sm.input[0])
        if scaled is None or scaled.op_type not in ("Mul", "Div"):
            continue
        qk, scale = None, None
        for i, j in ((0, 1), (1, 0)):
            m = G.producer(scaled.input[i], "MatMul")
            s = G.const(scaled.input[j])
            if m is not None and s is not None and s.size == 1 and (scaled.op_type == "Mul" or i == 0):
                qk, scale = m, float(s.reshape(-1)[0])
        if qk is None:
            continue
        if scaled.op_type == "Div":
            scale = 1.0 / scale
        q = projection(G, qk.input[0], [0, 2, 1, 3])
        k = projection(G, qk.input[1], [0, 2, 3, 1])
        if q is None or k is None:
            continue
        # Softmax, then any Casts (the exporter writes float->float casts).
        t, chain = sm.output[0], []
        nxt = G.only_consumer(t)
        while nxt is not None and nxt.op_type == "Cast":
            chain.append(nxt)
            t = nxt.output[0]
            nxt = G.only_consumer(t)
        pv = nxt
        if pv is None or pv.op_type != "MatMul" or pv.input[0] != t:
            continue
        v = projection(G, pv.input[1], [0, 2, 1, 3])
        if v is None:
            continue
        out_tr = G.only_consumer(pv.output[0])
        if out_tr is None or out_tr.op_type != "Transpose" or perm(out_tr) != [0, 2, 1, 3]:
            continue
        out_rs = next((c for c in G.cons.get(out_tr.output[0], []) if c.op_type == "Reshape"), None)
        if out_rs is None:
            continue
        x = q[0]
        if k[0] != x or v[0] != x or not (q[3] == k[3] == v[3]) or not (q[4] == k[4] == v[4]):
            continue
        heads = q[3]
        w = np.concatenate([q[1], k[1], v[1]], axis=1).astype(np.float32)
        b = np.concatenate([q[2], k[2], v[2]]).astype(np.float32)
        base = sm.name.replace("/", "_").strip("_") or f"attn{fused}"
        wn, bn = f"{base}_qkv_weight", f"{base}_qkv_bias"
        new_inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
        node = helper.make_node("Attention", [x, wn, bn], [out_rs.output[0]], name=f"{base}_Attention",
                                domain="com.microsoft", num_heads=heads, scale=scale)
        # The fused node takes the place of the output reshape, so the graph
        # stays in topological order; what fed only the old block is pruned.
        replace[out_rs.output[0]] = node
        fused += 1
    if not fused:
        return 0
    set_nodes(G.g, [replace.get(n.output[0], n) if n.output else n for n in G.g.node])
    G.g.initializer.extend(new_inits)
    prune(model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def prune(model):
    """Drop nodes whose outputs nothing uses, and unused initializers."""
    g = model.graph
    needed = {o.name for o in g.output}
    while True:
        used = set(needed)
        for n in g.node:
            used.update(n.input)
        keep = [n for n in g.node if any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            break
        set_nodes(g, keep)
    inits = [copy(t) for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)


def copy(msg):
    c = type(msg)()
    c.CopyFrom(msg)
    return c


def set_nodes(g, nodes):
    """Replace g's nodes with copies of nodes (a repeated field's elements
    are not safe to hold across clearing it)."""
    nodes = [copy(n) for n in nodes]
    del g.node[:]
    g.node.extend(nodes)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    m = onnx.load(sys.argv[1])
    n = fuse(m)
    onnx.save(m, sys.argv[2])
    print(f"fuse_attention: {n} attention blocks fused into com.microsoft.Attention")


if __name__ == "__main__":
    main()

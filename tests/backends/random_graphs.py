"""Random op graphs for differential tests of the backends against the reference: a few inputs
of assorted shapes (odd sizes, size-1 axes, rows longer than a vector), then a random chain of
elementwise math, broadcasting binary ops against inputs or new parameters, reductions,
transposes, reshapes, strided slices, matmuls, softmax, layer norm, concatenations and selects,
several of the last values as outputs. Values stay finite by construction (exp of a tanh, log of
|x| + 0.5, division by |x| + 0.5), so any mismatch is the backend's.

`random_conv_graph` does the same for image networks: 4-D activations through convolutions of
random kernel, stride, padding, dilation and groups, max and average pooling, batch norm in both
modes, padding (negative and interior too), channel concatenation and gathers, residual adds,
softmax over channels or a row, and sometimes a classifier head. `random_sequence_graph` builds
sequence models over token ids: an embedding, RNN/GRU/LSTM layers, causal or plain
self-attention, dense layers, layer norm, dropout and a cross-entropy head. `with_gradients`
appends a random weighting of the outputs as a loss and its gradients with respect to every
float input and parameter, so that the backward pass of each combination is compared as well.
Failures the generators found stay as plain cases in the backends' tests."""

from __future__ import annotations

import random

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph

UNARY = ("neg", "abs", "sigmoid", "tanh", "relu", "softplus", "erf", "sin", "cos", "atan")
BINARY = ("add", "sub", "mul", "maximum", "minimum")
GUARDED = {
    "exp": lambda b, t: b.exp(b.tanh(t) * 3.0),
    "log": lambda b, t: b.log(b.abs(t) + 0.5),
    "sqrt": lambda b, t: b.sqrt(b.abs(t)),
    "rsqrt": lambda b, t: b.rsqrt(b.abs(t) + 0.25),
    "div": lambda b, t: t / (b.abs(t) + 0.5),
}


def _shape(r: random.Random) -> tuple[int, ...]:
    dims = [r.choice([1, 2, 3, 5, 7, 8, 16, 17, 33]) for _ in range(r.randint(1, 3))]
    if r.random() < 0.3:
        dims[-1] = r.choice([64, 100, 130, 257])
    return tuple(dims)


def _partner(b: Builder, r: random.Random, t: Tensor, u: Tensor, name: str) -> Tensor:
    """u if it broadcasts against t, else a new parameter shaped like a suffix of t's shape
    with some axes of size 1."""
    try:
        np.broadcast_shapes(t.shape, u.shape)
        return u
    except ValueError:
        suffix = t.shape[r.randint(0, t.ndim - 1):]
        return b.param(name, tuple(1 if r.random() < 0.4 else d for d in suffix), init="normal")


def _slice(b: Builder, r: random.Random, t: Tensor) -> Tensor:
    ax = r.randrange(t.ndim)
    lo = r.randint(0, t.shape[ax] - 1)
    start, stop, step = [0] * t.ndim, list(t.shape), [1] * t.ndim
    start[ax], stop[ax], step[ax] = lo, r.randint(lo + 1, t.shape[ax]), r.choice([1, 1, 2])
    return b.slice(t, start=tuple(start), stop=tuple(stop), step=tuple(step))


def _step(b: Builder, r: random.Random, pool: list[Tensor], k: int) -> Tensor:
    t = r.choice(pool)
    if t.ndim == 0:
        t = t.reshape(1)
    kind = r.random()
    if kind < 0.2:
        return b.op(r.choice(UNARY), t)
    if kind < 0.3:
        return GUARDED[r.choice(sorted(GUARDED))](b, t)
    if kind < 0.5:
        return b.op(r.choice(BINARY), t, _partner(b, r, t, r.choice(pool), f"p{k}"))
    if kind < 0.6:
        axes = tuple(sorted(r.sample(range(t.ndim), r.randint(1, t.ndim))))
        return (t.sum if r.random() < 0.5 else t.max)(axes, keepdims=r.random() < 0.5)
    if kind < 0.67 and t.ndim >= 2:
        perm = list(range(t.ndim))
        r.shuffle(perm)
        return t.transpose(*perm)
    if kind < 0.72:
        return t.reshape(-1) if t.ndim > 1 else t.reshape(1, *t.shape)
    if kind < 0.78:
        return _slice(b, r, t)
    if kind < 0.84:
        w = b.param(f"w{k}", (t.shape[-1], r.choice([1, 5, 16, 40])), init="normal")
        return b.matmul(t, w) * (1.0 / t.shape[-1] ** 0.5)
    if kind < 0.88:
        return b.softmax(t, axis=r.randrange(t.ndim))
    if kind < 0.91:
        return b.layer_norm(t, axis=r.randrange(t.ndim))
    if kind < 0.95:
        return b.concat(t, t * 0.5, axis=r.randrange(t.ndim))
    u = _partner(b, r, t, r.choice(pool), f"q{k}")
    return b.select(b.op("gt", t, u), t, u)


def random_graph(seed: int) -> tuple[Graph, dict[str, np.ndarray]]:
    """A random graph and inputs for it, the same for the same seed."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    b = Builder(f"random{seed}", seed=seed)
    pool, feeds = [], {}
    for i in range(r.randint(1, 3)):
        shape = _shape(r)
        pool.append(b.input(f"x{i}", shape))
        feeds[f"x{i}"] = rng.standard_normal(shape).astype(np.float32)
    for k in range(r.randint(2, 12)):
        try:
            pool.append(_step(b, r, pool, k))
        except GraphError:  # an op that does not apply to the operand picked
            continue
    last = pool[-6:]
    outs = r.sample(last, min(r.randint(1, 3), len(last)))
    return b.build(outputs={f"y{i}": t for i, t in enumerate(outs)}), feeds


# -- image networks --------------------------------------------------------------------------------


IMAGE_UNARY = ("relu", "sigmoid", "tanh", "softplus", "neg", "abs", "erf", "atan")


def _conv(b, r, t, k, large):
    c = t.shape[1]
    kh, kw = r.choice([1, 2, 3]), r.choice([1, 3, 5])
    groups = r.choice([g for g in (1, 1, 2, 3, c) if c % g == 0])
    out = groups * r.choice([1, 2, 3, 5] if not large else [1, 3, 8, 16, 32])
    if large and out > 256:
        out = groups
    stride = (r.choice([1, 1, 2]), r.choice([1, 2, 3]))
    dilation = (r.choice([1, 1, 2]), r.choice([1, 2]))
    padding = r.choice([0, 1, 2, (0, 1, 2, 0), "same" if stride == (1, 1) else 1])
    wgt = b.param(f"cw{k}", (out, c // groups, kh, kw), init="he")
    args = [t, wgt] + ([b.param(f"cb{k}", (out,), init="normal")] if r.random() < 0.6 else [])
    return b.conv2d(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _pool(b, r, t):
    kernel = (r.choice([1, 2, 3]), r.choice([2, 3]))
    stride = (r.choice([1, 2]), r.choice([1, 2, 3]))
    padding = tuple(r.randint(0, kk // 2) for kk in kernel)
    if r.random() < 0.5:
        return b.max_pool2d(t, kernel=kernel, stride=stride, padding=padding)
    return b.avg_pool2d(t, kernel=kernel, stride=stride, padding=padding,
                        count_include_pad=r.random() < 0.5)


def _channel_param(b, r, t, name):
    c = t.shape[1]
    shape = r.choice([(1, c, 1, 1), (c, 1, 1), (1, 1, 1, t.shape[3]), (1,)])
    return b.param(name, shape, init="normal")


def _same_shape(r, pool, t):
    return [u for u in pool if u.shape == t.shape and u is not t]


def _image_step(b: Builder, r: random.Random, pool: list[Tensor], k: int,
                large: bool) -> Tensor:
    t = r.choice(pool)
    kind = r.random()
    if kind < 0.22:
        return _conv(b, r, t, k, large)
    if kind < 0.32:
        return _pool(b, r, t)
    if kind < 0.42:
        return b.op(r.choice(IMAGE_UNARY), t)
    if kind < 0.52:
        op = r.choice(["add", "mul", "sub", "maximum"])
        return b.op(op, t, _channel_param(b, r, t, f"p{k}"))
    if kind < 0.6:
        same = _same_shape(r, pool, t)
        if not same:
            return b.op("add", t, t * 0.5).relu()
        return (t + r.choice(same)).relu()
    if kind < 0.66:
        c = t.shape[1]
        ps = [b.param(f"g{k}", (c,), init="normal"), b.param(f"be{k}", (c,), init="normal"),
              b.param(f"rm{k}", (c,), init="normal"), b.param(f"rv{k}", (c,), init="ones")]
        training = r.random() < 0.5
        out = b.batch_norm(t, *ps, training=training)
        return out[0] if training else out
    if kind < 0.72:
        low = (0, 0, r.randint(-1, 2), r.randint(0, 2))
        high = (0, 0, r.randint(0, 2), r.randint(-1, 1))
        interior = (0, 0, r.choice([0, 0, 1]), 0)
        return b.op("pad", t, low=low, high=high, interior=interior,
                    value=r.choice([0.0, 0.0, -1.5]))
    if kind < 0.78:
        others = [u for u in pool if u.shape[0] == t.shape[0] and u.shape[2:] == t.shape[2:]]
        return b.concat(t, r.choice(others), axis=1)
    if kind < 0.82:
        return b.op("reverse", t, axes=(r.choice([1, 2, 3]),))
    if kind < 0.86:
        return t.transpose(0, 1, 3, 2)
    if kind < 0.9:
        h, w = t.shape[2:]
        lo = r.randint(0, h - 1)
        return b.slice(t, start=(0, 0, lo, 0), stop=(t.shape[0], t.shape[1], h, w),
                       step=(1, 1, r.choice([1, 2]), r.choice([1, 2])))
    if kind < 0.95:
        c = t.shape[1]
        idx = np.array([r.randrange(c) for _ in range(r.randint(1, 2 * c))], np.int64)
        return b.op("take", t, b.const(idx, dtype="i64"), axis=1)
    return b.softmax(t, axis=r.choice([1, 3]))


def random_conv_graph(seed: int, large: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    """A random image network and inputs for it, the same for the same seed. `large` takes
    sizes where the convolution and GEMM paths for real layers (tiles, packing, threads) run."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    b = Builder(f"randconv{seed}", seed=seed)
    if large:
        shape = (r.choice([1, 2, 4, 8]), r.choice([3, 8, 16, 32, 64]), r.choice([8, 13, 16, 28]),
                 r.choice([8, 15, 16, 32]))
    else:
        shape = (r.choice([1, 2, 3]), r.choice([1, 2, 3, 4, 6]), r.choice([4, 5, 7, 9]),
                 r.choice([3, 6, 8, 11]))
    pool = [b.input("x", shape)]
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    for k in range(r.randint(2, 9)):
        try:
            pool.append(_image_step(b, r, pool, k, large))
        except GraphError:  # a window larger than the operand, or an op that does not apply
            continue
    last = pool[-4:]
    outs = {f"y{i}": t for i, t in enumerate(r.sample(last, min(r.randint(1, 2), len(last))))}
    if r.random() < 0.4:  # a classifier head
        t = pool[-1]
        feat = b.global_avg_pool(t).reshape(t.shape[0], t.shape[1])
        outs["logits"] = b.dense(feat, b.param("hw", (t.shape[1], 5), init="he"),
                                 b.param("hb", (5,), init="normal"))
    return b.build(outputs=outs), feeds


# -- sequence models ------------------------------------------------------------------------------

_RECURRENT_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _recurrent(b: Builder, r: random.Random, xs: Tensor, k: int) -> Tensor:
    _, batch, width = xs.shape
    kind = r.choice(sorted(_RECURRENT_GATES))
    hidden, gates = r.choice([1, 3, 5, 8]), _RECURRENT_GATES[kind]
    h0 = b.param(f"h{k}", (batch, hidden), init="normal")
    w_x = b.param(f"wx{k}", (width, gates * hidden), init="normal")
    w_z = b.param(f"wz{k}", (hidden, gates * hidden), init="normal")
    bias = [b.param(f"rb{k}", (gates * hidden,), init="normal")] if r.random() < 0.7 else []
    if kind == "lstm":
        c0 = b.param(f"c{k}", (batch, hidden), init="normal")
        return b.lstm(xs * 0.5, h0, c0, w_x, w_z, *bias)[0]
    if kind == "gru":
        return b.gru(xs * 0.5, h0, w_x, w_z, *bias, linear_before_reset=r.random() < 0.5)[0]
    return b.rnn(xs * 0.5, h0, w_x, w_z, *bias, activation=r.choice(["tanh", "relu"]))[0]


def _attention(b: Builder, r: random.Random, xs: Tensor, k: int) -> Tensor:
    """Single-head self-attention over time, causal or not: [T, B, F] -> [T, B, F]."""
    steps, _, width = xs.shape
    seq = xs.transpose(1, 0, 2)  # [B, T, F]
    q, kk, v = (b.matmul(seq, b.param(f"a{n}{k}", (width, width), init="normal") * 0.5)
                for n in "qkv")
    scores = b.matmul(q, kk.transpose(0, 2, 1)) / float(np.sqrt(width))
    if r.random() < 0.5:
        causal = np.tril(np.ones((steps, steps), bool))
        scores = b.select(b.const(causal, dtype="bool"), scores, -1e9)
    return b.matmul(b.softmax(scores, axis=2), v).transpose(1, 0, 2)


def _sequence_step(b: Builder, r: random.Random, pool: list[Tensor], k: int,
                   seed: Tensor) -> Tensor:
    t = r.choice(pool)
    kind = r.random()
    if kind < 0.25:
        return _recurrent(b, r, t, k)
    if kind < 0.4:
        return _attention(b, r, t, k)
    if kind < 0.55:
        out = r.choice([1, 4, 7])
        return b.dense(t, b.param(f"dw{k}", (t.shape[2], out), init="he"),
                       b.param(f"db{k}", (out,), init="normal"),
                       activation=r.choice(["none", "relu", "tanh", "sigmoid"]))
    if kind < 0.65:
        width = t.shape[2]
        return b.layer_norm(t, b.param(f"lg{k}", (width,), init="normal"),
                            b.param(f"lb{k}", (width,), init="normal"))
    if kind < 0.72:
        return b.op("reverse", t, axes=(0,))
    if kind < 0.8:
        return b.concat(t, r.choice(pool), axis=2)
    if kind < 0.88:
        same = _same_shape(r, pool, t)
        return (t + r.choice(same)) if same else b.gelu(t)
    if kind < 0.94:
        return b.dropout(t, seed, rate=r.choice([0.25, 0.5]), stream=k)
    return b.op(r.choice(IMAGE_UNARY), t)


def random_sequence_graph(seed: int) -> tuple[Graph, dict[str, np.ndarray]]:
    """A random sequence model over token ids and inputs for it: an embedding, recurrent layers
    (RNN, GRU, LSTM), self-attention, dense layers, layer norm, dropout, then a classifier over
    the mean in time with a cross-entropy loss against integer labels."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    b = Builder(f"randseq{seed}", seed=seed)
    steps, batch, vocab, width = r.randint(1, 6), r.randint(1, 4), r.randint(3, 12), r.randint(2, 8)
    classes = r.randint(2, 5)
    tokens, labels = b.input("tokens", (steps, batch), "i64"), b.input("labels", (batch,), "i64")
    drop_seed = b.input("seed", (), "i64")
    emb = b.param("emb", (vocab, width), init="normal")
    pool = [b.op("take", emb, tokens, axis=0)]
    for k in range(r.randint(1, 5)):
        try:
            pool.append(_sequence_step(b, r, pool, k, drop_seed))
        except GraphError:
            continue
    feat = pool[-1].mean((0,))
    logits = b.dense(feat, b.param("cw", (feat.shape[1], classes), init="he"),
                     b.param("cb", (classes,), init="normal"))
    graph = b.build(outputs={"loss": b.cross_entropy(logits, labels), "h": pool[-1]})
    feeds = {"tokens": rng.integers(0, vocab, (steps, batch)).astype(np.int64),
             "labels": rng.integers(0, classes, (batch,)).astype(np.int64),
             "seed": np.array(seed, np.int64)}
    return graph, feeds


def with_gradients(graph: Graph, seed: int) -> Graph:
    """`graph` with a loss (its float outputs weighted by fixed random tensors, summed) and the
    loss's gradients with respect to every input and parameter (outputs `grad.<name>`)."""
    from graphc.passes.autodiff import autodiff

    b = Builder.from_graph(graph)
    b.copy_body(graph)
    rng = np.random.default_rng(seed)
    outs = {k: b.tensor(v) for k, v in graph.outputs}
    terms = [(t * b.const(rng.standard_normal(t.shape).astype(np.float32))).sum()
             for t in outs.values() if t.dtype == "f32"]
    loss = terms[0]
    for t in terms[1:]:
        loss = loss + t
    full = b.build(outputs={**outs, "weighted": loss})
    return autodiff(full, "weighted", [v.node.attrs["name"] for v in full.inputs + full.params
                                   if v.type.dtype == "f32"])

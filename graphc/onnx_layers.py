"""ONNX import of the layer ops (`graphc.onnx_import` calls these): convolutions, transposed
convolutions, pooling, batch norm and the recurrent ops, whose attributes and weight layouts
differ most from graphc's. Each handler takes the importer, the ONNX node, its inputs (graphc
Tensors, or numpy arrays for constants) and its attributes."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir.builder import Tensor
from graphc.ir.ops.composite_rnn import gate_block, preactivation, time_step


def text(attrs, key: str, default: str) -> str:
    """A string attribute (onnx gives bytes)."""
    v = attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _pads(imp, node, attrs, spatial, kernel) -> list[int]:
    """ONNX pads [begin..., end...]: explicit, or from auto_pad and the static input size.
    SAME_* pads so that out = ceil(in / stride), the odd pixel at the end (UPPER) or the
    beginning (LOWER); VALID pads nothing."""
    rank = len(spatial)
    mode = text(attrs, "auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
    if mode == "VALID":
        return [0] * 2 * rank
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise imp.fail(node, f"auto_pad {mode!r}")
    strides = attrs.get("strides", [1] * rank)
    dil = attrs.get("dilations", [1] * rank)
    begin, end = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dil, strict=True):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin + end


def conv(imp, node, ins, attrs):
    x, w = imp.t(ins[0]), imp.t(ins[1])
    rank = x.ndim - 2
    if rank < 1:
        raise imp.fail(node, f"input of shape {x.shape}: Conv needs [N, C, *spatial]")
    pads = _pads(imp, node, attrs, x.shape[2:], w.shape[2:])
    padding = tuple((pads[i], pads[i + rank]) for i in range(rank))
    stride = tuple(attrs.get("strides", [1] * rank))
    dilation = tuple(attrs.get("dilations", [1] * rank))
    groups = int(attrs.get("group", 1))
    bias = imp.t(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if rank > 2:  # the N-d primitive; graphc's conv composites are 1-D and 2-D
        y = imp.b.op("conv", x, w, stride=stride, padding=padding, rhs_dilation=dilation,
                     groups=groups)
        return y if bias is None else y + bias.reshape(1, w.shape[0], *([1] * rank))
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    args = [x, w] + ([bias] if bias is not None else [])
    return imp.b.op("conv2d" if rank == 2 else "conv1d", *args, **kw)


def pool(imp, node, ins, attrs, kind: str | None = None):
    """MaxPool and AveragePool: graphc's pooling composite where the pads are the same on both
    sides, ceil_mode is off and the window is not dilated, else `reduce_window` with its own
    (begin, end) pads, ceil_mode's last partial window padded on at the end (never one that
    would start in the end padding, as ONNX and torch); a dilated window as one strided slice
    of the padded input per window offset, combined by max or sum (`_dilated_windows`). An
    average divides by how many input elements (with count_include_pad, also explicit pad
    elements) its window covers: a constant, computed here from the shapes."""
    x = imp.t(ins[0])
    rank = x.ndim - 2
    if rank < 1:
        raise imp.fail(node, f"input of shape {x.shape}: pooling needs [N, C, *spatial]")
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    dilation = [int(d) for d in attrs.get("dilations", [1] * rank)]
    if len(dilation) != rank or min(dilation) < 1:
        raise imp.fail(node, f"dilations {dilation} for {rank} spatial axes")
    span_k = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    pads = _pads(imp, node, attrs, x.shape[2:], kernel)
    spans = [n + pads[i] + pads[i + rank] for i, n in enumerate(x.shape[2:])]
    extra = [0] * rank
    if attrs.get("ceil_mode", 0):
        for i, n in enumerate(x.shape[2:]):
            out = -(-(spans[i] - span_k[i]) // strides[i]) + 1
            if (out - 1) * strides[i] >= n + pads[i]:
                out -= 1
            extra[i] = max((out - 1) * strides[i] + span_k[i] - spans[i], 0)
    kind = kind or ("max" if node.op_type == "MaxPool" else "avg")
    include_pad = bool(attrs.get("count_include_pad", 0))
    pad_end = [pads[i + rank] + extra[i] for i in range(rank)]
    divide = kind == "avg"  # a sum of windows, divided by what each covers
    if max(dilation) > 1:
        out = _dilated_windows(imp, x, kind, kernel, strides, dilation, pads[:rank], pad_end)
    elif pads[:rank] == pads[rank:] and not any(extra) and rank <= 2:
        kw = {"kernel": tuple(kernel), "stride": tuple(strides), "padding": tuple(pads[:rank])}
        if kind == "avg":
            kw["count_include_pad"] = include_pad
        out = imp.b.op(f"{kind}_pool{rank}d", x, **kw)
        divide = False
    else:
        window = {"window": (1, 1) + tuple(kernel), "strides": (1, 1) + tuple(strides),
                  "padding": (0, 0, 0, 0) + tuple(q for i in range(rank)
                                                   for q in (pads[i], pad_end[i]))}
        out = imp.b.reduce_window(x, kind="max" if kind == "max" else "sum", **window)
    if divide:
        covered = np.zeros([s + e for s, e in zip(spans, extra, strict=True)])
        inside = tuple(slice(0, s) if include_pad else slice(pads[i], pads[i] + n)
                       for i, (s, n) in enumerate(zip(spans, x.shape[2:], strict=True)))
        covered[inside] = 1.0
        views = np.lib.stride_tricks.sliding_window_view(covered, span_k)
        views = views[tuple(slice(None, None, s) for s in strides)
                      + tuple(slice(None, None, d) for d in dilation)]
        counts = views.sum(axis=tuple(range(rank, 2 * rank)))
        out = out / imp.b.const(counts.reshape((1, 1) + counts.shape).astype(np.float32))
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return [out, max_pool_indices(imp, x, kernel, strides, pads[:rank], pad_end,
                                      int(attrs.get("storage_order", 0)), dilation)]
    return [out] if len(node.output) == 1 else [out, None]


def _pooled_sizes(dims, kernel, strides, dilation, pad_begin, pad_end) -> list[int]:
    """Output points per spatial axis of windows spanning (k - 1)·dilation + 1 elements."""
    return [(d + lo + hi - (k - 1) * dl - 1) // st + 1 for d, lo, hi, k, st, dl
            in zip(dims, pad_begin, pad_end, kernel, strides, dilation, strict=True)]


def _window_slices(imp, x, kernel, strides, dilation, pad_begin, pad_end, fill):
    """(offset, slice) per window offset: the input padded with `fill`, sliced from the
    offset's dilated start with the pooling's strides, one output point per window."""
    import itertools

    n, c, *dims = x.shape
    xp = imp.b.op("pad", x, low=(0, 0, *pad_begin), high=(0, 0, *pad_end), value=fill)
    out = _pooled_sizes(dims, kernel, strides, dilation, pad_begin, pad_end)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * dl for o, dl in zip(offset, dilation, strict=True)]
        stop = [a + (m - 1) * st + 1 for a, m, st in zip(start, out, strides, strict=True)]
        yield offset, imp.b.op("slice", xp, start=(0, 0, *start), stop=(n, c, *stop),
                               step=(1, 1, *strides))


def _dilated_windows(imp, x, kind, kernel, strides, dilation, pad_begin, pad_end):
    """The max (padding -inf) or sum (padding 0) of every dilated window: elementwise over
    the window offsets' slices, which fusion makes one loop kernel."""
    fill = -math.inf if kind == "max" else 0.0
    acc = None
    for _, cand in _window_slices(imp, x, kernel, strides, dilation, pad_begin, pad_end, fill):
        acc = cand if acc is None else (imp.b.op("maximum", acc, cand) if kind == "max"
                                        else acc + cand)
    return acc


def max_pool_indices(imp, x, kernel, strides, pad_begin, pad_end, storage_order: int,
                     dilation=None):
    """MaxPool's Indices: where in x (flattened, N and C included; spatial axes row-major, or
    column-major with storage_order=1) each window's maximum is, the first one on ties. One
    strided slice of the -inf-padded input per kernel offset, kept where it is larger."""
    rank = len(kernel)
    dilation = dilation or [1] * rank
    n, c, *dims = x.shape
    shape = (n, c, *_pooled_sizes(dims, kernel, strides, dilation, pad_begin, pad_end))
    iota = lambda axis: imp.b.op("iota", shape=shape, axis=axis, dtype="i64")  # noqa: E731
    order = list(range(rank))[::-1] if storage_order else list(range(rank))
    base = (iota(0) * c + iota(1)) * int(np.prod(dims))
    best_v = best_i = None
    for offset, cand in _window_slices(imp, x, kernel, strides, dilation, pad_begin, pad_end,
                                       -math.inf):
        flat = base
        stride = 1
        for a in reversed(order):  # the last axis in `order` varies fastest
            coord = iota(2 + a) * strides[a] + (offset[a] * dilation[a] - pad_begin[a])
            flat = flat + coord * stride
            stride *= dims[a]
        if best_v is None:
            best_v, best_i = cand, flat
        else:
            better = cand > best_v
            best_v, best_i = imp.b.select(better, cand, best_v), imp.b.select(better, flat,
                                                                                 best_i)
    return best_i


def max_unpool(imp, node, ins, attrs):
    """Each value put back where its index says in a zero tensor of the unpooled shape (or the
    `output_shape` given). Indices from a MaxPool of overlapping windows repeat one element's
    position, with its value each time: the sums are divided by how often each position came."""
    x = imp.t(ins[0])
    idx = ins[1]
    idx = imp.b.const(np.asarray(idx, np.int64)) if isinstance(idx, np.ndarray) else imp.t(idx)
    idx = idx if idx.dtype == "i64" else idx.astype("i64")
    rank = x.ndim - 2
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * rank))]
    if len(ins) > 2 and ins[2] is not None:
        shape = imp.ints(node, ins[2], "output_shape")
    else:
        shape = [x.shape[0], x.shape[1]] + [
            (d - 1) * st - pads[i] - pads[i + rank] + k
            for i, (d, st, k) in enumerate(zip(x.shape[2:], strides, kernel, strict=True))]
    if list(shape[:2]) != list(x.shape[:2]):
        raise imp.fail(node, f"output_shape {list(shape)} for input {list(x.shape)}")
    total = int(np.prod(shape))
    zeros = imp.b.const(0.0, dtype=x.dtype, shape=(total,))
    flat_idx = idx.reshape(-1)
    sums = imp.b.scatter_add(zeros, flat_idx, x.reshape(-1), axis=0)
    counts = imp.b.scatter_add(zeros, flat_idx, imp.b.const(1.0, dtype=x.dtype,
                                                            shape=(int(np.prod(x.shape)),)),
                               axis=0)
    return (sums / counts.maximum(1.0)).reshape(*shape)


def col2im(imp, node, ins, attrs):
    """Col2Im: every column of blocks added back into the image, the adjoint of im2col. Block
    offset k's row of the input, laid out over the block positions, is spread by the strides
    (interior padding) and shifted to its offset (edge padding, negative where the pads crop);
    the image is the sum over the offsets."""
    import itertools

    x = imp.t(ins[0])
    image = imp.ints(node, ins[1], "image_shape")
    block = imp.ints(node, ins[2], "block_shape")
    rank = len(image)
    dil = [int(d) for d in attrs.get("dilations", [1] * rank)]
    strides = [int(st) for st in attrs.get("strides", [1] * rank)]
    pads = [int(q) for q in attrs.get("pads", [0] * (2 * rank))]
    n, ck, length = x.shape
    k = int(np.prod(block))
    positions = [(image[i] + pads[i] + pads[i + rank] - dil[i] * (block[i] - 1) - 1)
                 // strides[i] + 1 for i in range(rank)]
    if ck % k or int(np.prod(positions)) != length:
        raise imp.fail(node, f"input of shape {list(x.shape)} for blocks {block} over an image "
                             f"{image} ({int(np.prod(positions))} block positions)")
    c = ck // k
    cols = x.reshape(n, c, k, *positions)
    out = None
    for j, offset in enumerate(itertools.product(*(range(b) for b in block))):
        col = imp.b.op("slice", cols, start=(0, 0, j) + (0,) * rank,
                       stop=(n, c, j + 1, *positions)).reshape(n, c, *positions)
        low = [o * d - pads[i] for i, (o, d) in enumerate(zip(offset, dil, strict=True))]
        high = [image[i] - low[i] - ((positions[i] - 1) * strides[i] + 1) for i in range(rank)]
        part = imp.b.op("pad", col, low=(0, 0, *low), high=(0, 0, *high),
                        interior=(0, 0, *[st - 1 for st in strides]))
        out = part if out is None else out + part
    return out


def global_avg_pool(imp, node, ins, attrs):
    x = imp.t(ins[0])
    return x.mean(tuple(range(2, x.ndim)), keepdims=True)


def batch_norm(imp, node, ins, attrs):
    """Inference BatchNormalization from the running statistics; with training_mode=1 (opset
    14) from the batch's, and the optional running-statistics outputs as ONNX defines them:
    old · momentum + batch · (1 - momentum), with the biased batch variance."""
    x, gamma, beta, mean, var = (imp.t(v) for v in ins[:5])
    eps = float(attrs.get("epsilon", 1e-5))
    if not attrs.get("training_mode", 0):
        return imp.b.op("batch_norm", x, gamma, beta, mean, var, training=False, eps=eps)
    y = imp.b.op("batch_norm", x, gamma, beta, mean, var, training=True, eps=eps)[0]
    momentum = float(attrs.get("momentum", 0.9))
    axes = (0,) + tuple(range(2, x.ndim))
    batch_mean = x.mean(axes)
    centered = x - batch_mean.reshape(1, -1, *([1] * (x.ndim - 2)))
    batch_var = (centered * centered).mean(axes)
    running = [old * momentum + new * (1.0 - momentum)
               for old, new in ((mean, batch_mean), (var, batch_var))]
    return [y, *running][:len(node.output)]


def layer_norm(imp, node, ins, attrs):
    """LayerNormalization (opset 17) as graphc's layer_norm; Scale and B broadcast to the
    normalized shape first where they are smaller. Only Y: the saved mean and inverse standard
    deviation outputs are for training kernels and must be unused."""
    x = imp.t(ins[0])
    axis = int(attrs.get("axis", -1))
    axis = axis + x.ndim if axis < 0 else axis
    inner = x.shape[axis:]
    affine = [imp.t(v) for v in ins[1:3] if v is not None]
    affine = [p if p.shape == inner else imp.b.broadcast_to(p, inner) for p in affine]
    y = imp.b.op("layer_norm", x, *affine, axis=axis, eps=float(attrs.get("epsilon", 1e-5)))
    return [y] + [None] * (len(node.output) - 1)


def weight_values(imp, v) -> tuple[np.ndarray | Tensor, bool]:
    """A weight the importer re-lays out, and whether it is trainable. An initializer gives its
    values (imported as a parameter), a Constant node's subgraph its folded values (an
    exporter's frozen weights: a constant); a weight computed at run time (from parameters,
    weight normalization) stays the graph tensor, to be re-laid out by graph ops."""
    if isinstance(v, np.ndarray):
        return v, True
    values = imp.numbers(v)
    return (v if values is None else values), False


def conv_transpose(imp, node, ins, attrs):
    """ConvTranspose as the `conv` primitive: the input dilated by the stride, the kernel
    flipped with its channel axes swapped per group (an initializer, re-laid out at import
    into a parameter named after it; a weight computed at run time, by graph ops), padding
    d*(k-1) - pads (plus output_padding at the end)."""
    x = imp.t(ins[0])
    w, trainable = weight_values(imp, ins[1])
    computed = isinstance(w, Tensor)  # e.g. weight normalization
    rank = x.ndim - 2
    if rank < 1 or w.ndim != rank + 2:
        raise imp.fail(node, f"input {x.shape} and weight {w.shape} do not make a transposed "
                             "convolution")
    if text(attrs, "auto_pad", "NOTSET") != "NOTSET" or "output_shape" in attrs:
        raise imp.fail(node, "auto_pad and output_shape: give pads and output_padding")
    groups = int(attrs.get("group", 1))
    c_in, c_out_g, *kernel = w.shape
    if groups < 1 or c_in % groups:
        raise imp.fail(node, f"weight {w.shape} does not split into {groups} groups")
    strides = list(attrs.get("strides", [1] * rank))
    dil = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * 2 * rank))
    out_pad = list(attrs.get("output_padding", [0] * rank))
    # [C_in, C_out/g, *k] -> per group [C_out/g, C_in/g, *k] -> [C_out, C_in/g, *k], flipped
    wg = w.reshape(groups, c_in // groups, c_out_g, *kernel)
    if computed:  # the same re-layout as graph ops, every call
        perm = (0, 2, 1, *range(3, rank + 3))
        wg = wg.transpose(*perm).reshape(groups * c_out_g, c_in // groups, *kernel)
        weight = imp.b.op("reverse", wg, axes=tuple(range(2, rank + 2)))
    else:
        wg = np.swapaxes(wg, 1, 2).reshape(groups * c_out_g, c_in // groups, *kernel)
        wg = np.ascontiguousarray(wg[(slice(None), slice(None))
                                     + (slice(None, None, -1),) * rank])
        weight = (imp.b.param(imp.fresh(node.input[1]), init=wg.astype(np.float32),
                              frozen=node.input[1] in imp.frozen) if trainable
                  else imp.b.const(wg.astype(np.float32)))
    padding = tuple((dil[i] * (kernel[i] - 1) - pads[i],
                     dil[i] * (kernel[i] - 1) - pads[i + rank] + out_pad[i]) for i in range(rank))
    y = imp.b.op("conv", x, weight, stride=(1,) * rank, padding=padding,
                 lhs_dilation=tuple(strides), rhs_dilation=tuple(dil), groups=groups)
    if len(ins) > 2 and ins[2] is not None:
        y = y + imp.t(ins[2]).reshape(1, groups * c_out_g, *([1] * rank))
    return y


# ONNX stacks an LSTM's gates i, o, f, c (graphc: i, f, g, o) and a GRU's z, r, h (r, z, n)
_GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}


def _unrolled_lstm(imp, xs, h, c, w_x, w_z, bias, peep=None, clip=None,
                   input_forget=False):
    """An LSTM with what graphc's `lstm` has not, unrolled here from the same parameters and
    the cell's own pieces (`composite_rnn`: one pre-activation for all gates, blocks i, f, g,
    o): peepholes (ONNX's P = [p_i, p_o, p_f]: the input and forget gates also see c_{t-1},
    the output gate c_t), `clip` (the gates' pre-activations clipped to [-clip, clip]) and
    `input_forget` (f = 1 - i). Returns (hs [T, B, H], h_T, c_T)."""
    b = imp.b
    hidden = h.shape[1]
    if peep is not None:
        p_i, p_o, p_f = (b.op("slice", peep, start=(k * hidden,), stop=((k + 1) * hidden,))
                         for k in range(3))

    def gate(pre, k: int, peek=None, act=b.sigmoid):
        z = gate_block(b, pre, k, hidden)
        z = z if peek is None else z + peek
        if clip is not None:
            z = b.op("minimum", b.op("maximum", z, b.const(-clip, dtype=z.dtype)),
                     b.const(clip, dtype=z.dtype))
        return act(z)

    outs = []
    for t in range(xs.shape[0]):
        pre = preactivation(b, time_step(b, xs, t), h, w_x, w_z, [bias])
        i = gate(pre, 0, None if peep is None else p_i * c)
        f = 1.0 - i if input_forget else gate(pre, 1, None if peep is None else p_f * c)
        c = f * c + i * gate(pre, 2, act=b.tanh)
        h = gate(pre, 3, None if peep is None else p_o * c) * b.tanh(c)
        outs.append(h.reshape(1, *h.shape))
    hs = b.op("concat", *outs, axis=0) if len(outs) > 1 else outs[0]
    return hs, h, c


_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


def recurrent(imp, node, ins, attrs):
    """ONNX LSTM, GRU and RNN (time-major) as graphc's `lstm`, `gru` and `rnn`, one per
    direction. W, R and B become parameters in graphc's layout, one set per direction (`<W>`,
    `<W>.reverse`): W_x = W[d] transposed to [D, G*H] with the gate blocks reordered to
    graphc's, W_z likewise from R; an LSTM's or RNN's b = the two biases of B summed, a GRU keeps
    them apart (`<B>` the input one, `<B>.hidden` the recurrent one: its n-gate part is
    multiplied by the reset gate). The reverse direction runs the same op over the steps in
    reverse order (a concatenation of the time slices), its outputs put back in time order.
    With layout=1 (batch-major: X [B, T, D], states [B, dirs, H], Y [B, T, dirs, H]) the
    inputs are transposed to the time-major form and the outputs back. Weights from Constant
    nodes become constants; weights computed at run time (from parameters, in an export without
    constant folding) are re-laid out by graph ops, so their gradients reach the parameters."""
    kind = node.op_type
    n_gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    direction = text(attrs, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise imp.fail(node, f"direction {direction!r}")
    clip = float(attrs["clip"]) if "clip" in attrs else None
    input_forget = bool(attrs.get("input_forget", 0))
    if kind != "LSTM" and (clip is not None or input_forget):
        raise imp.fail(node, f"clip is supported for LSTM only (an {kind} imports as "
                             f"graphc's {kind.lower()})")
    batch_major = bool(attrs.get("layout", 0))
    acts = [a.decode().lower() if isinstance(a, bytes) else a.lower()
            for a in attrs.get("activations", [])]
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    default = _DEFAULT_ACTIVATIONS.get(kind)
    activation = "tanh"
    if acts and default and acts not in (default, default * len(dirs)):
        wanted = ", ".join(a.capitalize() for a in default)
        raise imp.fail(node, f"activations {acts} (an {kind} imports with {wanted})")
    if acts and kind == "RNN":
        if len(set(acts)) != 1 or acts[0] not in ("tanh", "relu", "sigmoid"):
            raise imp.fail(node, f"activations {acts} (one of Tanh, Relu, Sigmoid for all)")
        activation = acts[0]
    peep = imp.t(ins[7]) if kind == "LSTM" and len(ins) > 7 and ins[7] is not None else None
    xs = imp.t(ins[0])
    if batch_major:
        xs = xs.transpose(1, 0, 2)
    t_steps, batch, _ = xs.shape
    raw = [node.input[k] if len(node.input) > k and node.input[k] else
           f"{node.output[0] or 'rnn'}_{what}" for k, what in ((1, "W"), (2, "R"), (3, "B"))]
    consts, trainable, computed = {}, True, False
    for k, what in ((1, "W"), (2, "R"), (3, "B")):
        v = ins[k] if len(ins) > k else None
        if v is not None:
            v, init = weight_values(imp, v)
            trainable &= init
            computed |= isinstance(v, Tensor)  # an export without constant folding
        consts[what] = v
    if computed:  # every weight a graph tensor, re-laid out by graph ops (gradients flow back)
        for k, what in enumerate(("W", "R", "B")):
            v = consts[what]
            if isinstance(v, np.ndarray):
                consts[what] = (imp.b.param(imp.fresh(raw[k]), init=v.astype(np.float32),
                                            frozen=raw[k] in imp.frozen)
                                if isinstance(ins[k + 1], np.ndarray)
                                else imp.b.const(v.astype(np.float32)))
    hidden = int(attrs.get("hidden_size", consts["R"].shape[-1]))
    seq = ins[4] if len(ins) > 4 else None
    if seq is not None and not (isinstance(seq, np.ndarray) and np.all(seq == t_steps)):
        raise imp.fail(node, "sequence_lens must be absent or all equal to the sequence length")
    if consts["W"].shape[0] != len(dirs) or consts["R"].shape[0] != len(dirs):
        raise imp.fail(node, f"W and R need {len(dirs)} direction(s) for {direction!r}")
    width = n_gates * hidden
    if kind == "GRU":
        raw.append(raw[2] + ".hidden")

    def rows(v, lo: int, hi: int):  # v[lo:hi], for numbers and graph tensors alike
        if isinstance(v, np.ndarray):
            return v[lo:hi]
        return imp.b.op("slice", v, start=(lo,) + (0,) * (v.ndim - 1),
                        stop=(hi,) + tuple(v.shape[1:]))

    def gates(w):  # [G*H, ...] in ONNX order -> graphc order
        parts = [rows(w, g * hidden, (g + 1) * hidden) for g in _GATE_ORDER[kind]]
        if isinstance(w, np.ndarray):
            return np.concatenate(parts)
        return imp.b.op("concat", *parts, axis=0) if len(parts) > 1 else parts[0]

    def direction_of(v, d: int):
        return v[d] if isinstance(v, np.ndarray) else rows(v, d, d + 1).reshape(*v.shape[1:])

    def transposed(v):
        return v.T if isinstance(v, np.ndarray) else v.transpose(1, 0)

    def biases(d: int) -> list:
        bias = consts["B"]
        if bias is None:
            bias = np.zeros((len(dirs), 2 * width), np.float32)
        bias = direction_of(bias, d)
        if kind == "GRU":
            return [gates(rows(bias, 0, width)), gates(rows(bias, width, 2 * width))]
        return [gates(rows(bias, 0, width)) + gates(rows(bias, width, 2 * width))]

    def reverse_time(t):
        steps = [imp.b.op("slice", t, start=(s, 0, 0), stop=(s + 1,) + t.shape[1:])
                 for s in reversed(range(t_steps))]
        return imp.b.op("concat", *steps, axis=0) if t_steps > 1 else t

    ys, finals = [], [[] for _ in range(2 if kind == "LSTM" else 1)]
    state_inputs = (5, 6) if kind == "LSTM" else (5,)
    for d, name in enumerate(dirs):
        values = (transposed(gates(direction_of(consts["W"], d))),
                  transposed(gates(direction_of(consts["R"], d))), *biases(d))
        suffix = "" if d == 0 else ".reverse"
        params = [v if isinstance(v, Tensor)
                  else imp.b.const(np.ascontiguousarray(v, np.float32)) if computed
                  or not trainable
                  else imp.b.param(imp.fresh(r + suffix), init=v.astype(np.float32),
                                   frozen=r in imp.frozen)
                  for r, v in zip(raw, values, strict=True)]
        states = []
        for k in state_inputs:
            v = ins[k] if len(ins) > k else None
            if v is None:
                states.append(imp.b.zeros((batch, hidden), xs.dtype))
                continue
            both = imp.t(v)
            both = (both.transpose(1, 0, 2) if batch_major else both).reshape(
                len(dirs), batch, hidden)
            states.append(imp.b.op("slice", both, start=(d, 0, 0),
                                   stop=(d + 1, batch, hidden)).reshape(batch, hidden))
        seq_in = reverse_time(xs) if name == "reverse" else xs
        if kind == "LSTM" and (peep is not None or clip is not None or input_forget):
            p_d = None if peep is None else imp.b.op(
                "slice", peep, start=(d, 0), stop=(d + 1, 3 * hidden)).reshape(3 * hidden)
            hs, *last = _unrolled_lstm(imp, seq_in, *states, *params, p_d, clip, input_forget)
        elif kind == "LSTM":
            hs, *last = imp.b.op("lstm", seq_in, *states, *params)
        elif kind == "GRU":
            hs, *last = imp.b.op("gru", seq_in, *states, *params, linear_before_reset=bool(
                attrs.get("linear_before_reset", 0)))
        else:
            hs, *last = imp.b.op("rnn", seq_in, *states, *params, activation=activation)
        if name == "reverse":
            hs = reverse_time(hs)
        ys.append(hs.reshape(t_steps, 1, batch, hidden))
        for acc, v in zip(finals, last, strict=True):
            acc.append(v.reshape(1, batch, hidden))

    def stack(parts, axis):
        return parts[0] if len(parts) == 1 else imp.b.op("concat", *parts, axis=axis)

    y, lasts = stack(ys, 1), [stack(parts, 0) for parts in finals]
    if batch_major:
        return [y.transpose(2, 0, 1, 3)] + [v.transpose(1, 0, 2) for v in lasts]
    return [y] + lasts

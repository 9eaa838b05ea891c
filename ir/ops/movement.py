"""Movement primitives: reshape, transpose, reverse, broadcast, slice, pad and concat. They move
or copy elements without arithmetic, so every one works on every dtype, and in fused kernels
they become index maps of loads (no copy at all).

Canonical attributes (what `normalize` stores in the node):
- reshape: `shape` fully explicit (a single -1 is resolved);
- transpose: `perm` with non-negative entries;
- reverse: `axes` non-negative, sorted, without repeats (a convolution's flipped kernel);
- slice: one (start, stop, step) per axis with 0 <= start <= stop <= dim and step >= 1, clamped
  like Python slicing (negative indices count from the end); output dim ceil((stop-start)/step);
- pad: XLA semantics, `interior` filled in (zeros by default); negative low/high crop;
- concat: non-negative `axis`.

Each VJP is itself made of movement ops: slice and pad are each other's transposes, broadcast
transposes to a sum over the broadcast axes, concat to slices of the cotangent.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import FLOAT_DTYPES, TensorType
from .shapes import norm_axis, unbroadcast


def _grads_wanted(x, ct) -> bool:
    return ct is not None and x.dtype in FLOAT_DTYPES


def _per_axis(name: str, values: tuple[int, ...], t: TensorType) -> None:
    if len(values) != t.rank:
        raise ShapeError(f"{name}={values} has {len(values)} entries but the operand {t} has "
                         f"rank {t.rank}; give one entry per axis")


# -- reshape ---------------------------------------------------------------------------------------


def normalize_reshape(types, attrs):
    (t,) = types
    shape = list(attrs["shape"])
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape of {t} to {tuple(shape)}: at most one -1 is allowed")
    bad = [d for d in shape if d < -1]
    if bad:
        raise ShapeError(f"reshape of {t} to {tuple(shape)}: negative dimension {bad[0]}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or t.size % known:
            raise ShapeError(f"cannot reshape {t} ({t.size} elements) to {tuple(shape)}: "
                             f"no size for the -1 fits")
        shape[shape.index(-1)] = t.size // known
    return {**attrs, "shape": tuple(shape)}


def infer_reshape(types, attrs):
    (t,) = types
    shape = attrs["shape"]
    if math.prod(shape) != t.size:
        raise ShapeError(f"cannot reshape {t} ({t.size} elements) to {shape} "
                         f"({math.prod(shape)} elements)")
    return TensorType(shape, t.dtype)


def ref_reshape(inputs, attrs):
    return np.reshape(inputs[0], attrs["shape"])


def vjp_reshape(b, ins, outs, cts, attrs):
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    return (b.reshape(ct, x.shape),)


# -- reverse ---------------------------------------------------------------------------------------


def normalize_reverse(types, attrs):
    (t,) = types
    axes = tuple(norm_axis(a, t.rank) for a in attrs["axes"])
    if len(set(axes)) != len(axes):
        raise ShapeError(f"axes={attrs['axes']} repeats an axis of {t}")
    return {**attrs, "axes": tuple(sorted(axes))}


def infer_reverse(types, attrs):
    return types[0]


def ref_reverse(inputs, attrs):
    return np.flip(inputs[0], attrs["axes"]).copy()


def vjp_reverse(b, ins, outs, cts, attrs):
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    return (b.op("reverse", ct, axes=attrs["axes"]),)


# -- transpose -------------------------------------------------------------------------------------


def normalize_transpose(types, attrs):
    (t,) = types
    perm = attrs["perm"]
    _per_axis("perm", perm, t)
    if any(not -t.rank <= p < t.rank for p in perm):
        raise ShapeError(f"perm={perm} has an axis out of range for {t}")
    canon = tuple(p % t.rank for p in perm)
    if sorted(canon) != list(range(t.rank)):
        raise ShapeError(f"perm={perm} is not a permutation of the {t.rank} axes of {t}")
    return {**attrs, "perm": canon}


def infer_transpose(types, attrs):
    (t,) = types
    return TensorType(tuple(t.shape[p] for p in attrs["perm"]), t.dtype)


def ref_transpose(inputs, attrs):
    return np.transpose(inputs[0], attrs["perm"])


def vjp_transpose(b, ins, outs, cts, attrs):
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    inverse = tuple(int(i) for i in np.argsort(attrs["perm"]))
    return (b.transpose(ct, perm=inverse),)


# -- broadcast -------------------------------------------------------------------------------------


def infer_broadcast(types, attrs):
    (t,) = types
    shape = attrs["shape"]
    if any(d < 0 for d in shape):
        raise ShapeError(f"cannot broadcast {t} to {shape}: negative dimension")
    lead = len(shape) - t.rank
    if lead < 0:
        raise ShapeError(f"cannot broadcast {t} to {shape}: the target has lower rank")
    for i, d in enumerate(t.shape):
        if d != 1 and d != shape[lead + i]:
            raise ShapeError(f"cannot broadcast {t} to {shape}: axis {i} has size {d}, "
                             f"not 1 or {shape[lead + i]}")
    return TensorType(shape, t.dtype)


def ref_broadcast(inputs, attrs):
    # A copy, not numpy's read-only view, so later references may treat it as any array.
    return np.array(np.broadcast_to(inputs[0], attrs["shape"]))


def vjp_broadcast(b, ins, outs, cts, attrs):
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    return (unbroadcast(b, ct, x.shape),)


# -- slice -----------------------------------------------------------------------------------------


def normalize_slice(types, attrs):
    (t,) = types
    step = attrs["step"] if attrs["step"] is not None else (1,) * t.rank
    for name, values in (("start", attrs["start"]), ("stop", attrs["stop"]), ("step", step)):
        _per_axis(name, values, t)
    if any(s <= 0 for s in step):
        raise ShapeError(f"step={step} must be >= 1 on every axis of {t}")
    starts, stops = [], []
    for a, b, d in zip(attrs["start"], attrs["stop"], t.shape, strict=True):
        lo, hi, _ = slice(a, b, 1).indices(d)  # Python clamping of negative/overlong indices
        starts.append(lo)
        stops.append(max(lo, hi))
    return {"start": tuple(starts), "stop": tuple(stops), "step": tuple(step)}


def slice_dim(start: int, stop: int, step: int) -> int:
    return -(-(stop - start) // step)


def infer_slice(types, attrs):
    (t,) = types
    dims = (slice_dim(*s) for s in zip(attrs["start"], attrs["stop"], attrs["step"], strict=True))
    return TensorType(tuple(dims), t.dtype)


def ref_slice(inputs, attrs):
    (x,) = inputs
    index = tuple(slice(*s) for s in zip(attrs["start"], attrs["stop"], attrs["step"], strict=True))
    return np.array(x[index])


def vjp_slice(b, ins, outs, cts, attrs):
    # The cotangent goes back where the slice took its elements: pad it with `start` zeros in
    # front, step-1 zeros between elements and whatever is left of the axis behind.
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    low, high, interior = [], [], []
    for start, step, n, d in zip(attrs["start"], attrs["step"], ct.shape, x.shape, strict=True):
        used = (n - 1) * step + 1 if n else 0
        low.append(start)
        interior.append(step - 1)
        high.append(d - start - used)
    return (b.pad(ct, low=tuple(low), high=tuple(high), interior=tuple(interior)),)


# -- pad -------------------------------------------------------------------------------------------


def normalize_pad(types, attrs):
    (t,) = types
    interior = attrs["interior"] if attrs["interior"] is not None else (0,) * t.rank
    for name, values in (("low", attrs["low"]), ("high", attrs["high"]),
                         ("interior", interior)):
        _per_axis(name, values, t)
    if any(i < 0 for i in interior):
        raise ShapeError(f"interior={interior} must be >= 0 on every axis of {t}")
    return {**attrs, "interior": tuple(interior)}


def dilated_dim(n: int, interior: int) -> int:
    """Size of an axis of n elements with `interior` zeros between neighbours."""
    return n + max(n - 1, 0) * interior


def infer_pad(types, attrs):
    (t,) = types
    dims = []
    for i, (n, lo, hi, it) in enumerate(zip(t.shape, attrs["low"], attrs["high"],
                                            attrs["interior"], strict=True)):
        d = lo + dilated_dim(n, it) + hi
        if d < 0:
            raise ShapeError(f"pad of {t} with low={attrs['low']}, high={attrs['high']}, "
                             f"interior={attrs['interior']} gives axis {i} negative size {d}")
        dims.append(d)
    return TensorType(tuple(dims), t.dtype)


def ref_pad(inputs, attrs):
    # Pad with the non-negative parts of low/high (and interior) first, then crop the negative.
    (x,) = inputs
    low, high, interior = attrs["low"], attrs["high"], attrs["interior"]
    full = [max(lo, 0) + dilated_dim(n, it) + max(hi, 0)
            for n, lo, hi, it in zip(x.shape, low, high, interior, strict=True)]
    out = np.full(full, attrs["value"], dtype=x.dtype)
    place = tuple(slice(max(lo, 0), max(lo, 0) + dilated_dim(n, it), it + 1)
                  for n, lo, it in zip(x.shape, low, interior, strict=True))
    out[place] = x
    crop = tuple(slice(max(-lo, 0), f - max(-hi, 0))
                 for f, lo, hi in zip(full, low, high, strict=True))
    return np.array(out[crop])


def vjp_pad(b, ins, outs, cts, attrs):
    # Undo the crop of negative low/high with zeros (cropped elements get no gradient), then
    # take every (interior+1)-th element where x was placed.
    (x,), (ct,) = ins, cts
    if not _grads_wanted(x, ct):
        return (None,)
    low, high, interior = attrs["low"], attrs["high"], attrs["interior"]
    if any(v < 0 for v in low + high):
        zeros = (0,) * x.ndim
        ct = b.pad(ct, low=tuple(max(-v, 0) for v in low), high=tuple(max(-v, 0) for v in high),
                   interior=zeros)
    start = tuple(max(lo, 0) for lo in low)
    stop = tuple(s + dilated_dim(n, it) for s, n, it in zip(start, x.shape, interior, strict=True))
    step = tuple(it + 1 for it in interior)
    return (b.slice(ct, start=start, stop=stop, step=step),)


# -- concat ----------------------------------------------------------------------------------------


def normalize_concat(types, attrs):
    t = types[0]
    if t.rank == 0:
        raise ShapeError(f"cannot concatenate rank-0 operands ({t})")
    return {**attrs, "axis": norm_axis(attrs["axis"], t.rank)}


def infer_concat(types, attrs):
    axis = attrs["axis"]
    first = types[0]
    listing = ", ".join(str(t) for t in types)
    for t in types[1:]:
        if t.dtype != first.dtype:
            raise DTypeError(f"concat operands have different dtypes: {listing}")
        if t.rank != first.rank:
            raise ShapeError(f"concat operands have different ranks: {listing}")
        for i, (d, e) in enumerate(zip(first.shape, t.shape, strict=True)):
            if i != axis and d != e:
                raise ShapeError(f"concat along axis {axis}: operands differ in axis {i} "
                                 f"({listing})")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return TensorType(tuple(shape), first.dtype)


def ref_concat(inputs, attrs):
    return np.concatenate(inputs, axis=attrs["axis"])


def vjp_concat(b, ins, outs, cts, attrs):
    (ct,) = cts
    axis = attrs["axis"]
    grads = []
    offset = 0
    for x in ins:
        n = x.shape[axis]
        if _grads_wanted(x, ct):
            start = tuple(offset if i == axis else 0 for i in range(x.ndim))
            stop = tuple(offset + n if i == axis else d for i, d in enumerate(ct.shape))
            grads.append(b.slice(ct, start=start, stop=stop, step=(1,) * x.ndim))
        else:
            grads.append(None)
        offset += n
    return tuple(grads)


def register_ops() -> None:
    register(
        OpDef("reshape", "movement", 1, infer_reshape, ref_reshape,
              attrs={"shape": Attr("ints")}, vjp=vjp_reshape, normalize=normalize_reshape,
              doc="Same elements in row-major order, new shape of equal size (one -1 allowed)."),
        OpDef("transpose", "movement", 1, infer_transpose, ref_transpose,
              attrs={"perm": Attr("ints")}, vjp=vjp_transpose, normalize=normalize_transpose,
              doc="Permute axes: output axis i is input axis perm[i]."),
        OpDef("reverse", "movement", 1, infer_reverse, ref_reverse,
              attrs={"axes": Attr("ints")}, vjp=vjp_reverse, normalize=normalize_reverse,
              doc="Reverse the order of the elements along each of `axes` (numpy flip)."),
        OpDef("broadcast", "movement", 1, infer_broadcast, ref_broadcast,
              attrs={"shape": Attr("ints")}, vjp=vjp_broadcast,
              doc="numpy broadcast_to: leading axes added, size-1 axes stretched."),
        OpDef("slice", "movement", 1, infer_slice, ref_slice,
              attrs={"start": Attr("ints"), "stop": Attr("ints"), "step": Attr("ints", None)},
              vjp=vjp_slice, normalize=normalize_slice,
              doc="x[start:stop:step] on every axis, Python clamping; step defaults to 1."),
        OpDef("pad", "movement", 1, infer_pad, ref_pad,
              attrs={"low": Attr("ints"), "high": Attr("ints"), "interior": Attr("ints", None),
                     "value": Attr("float", 0.0)},
              vjp=vjp_pad, normalize=normalize_pad,
              doc="XLA pad: low/high edge padding (negative crops), interior padding between "
                  "elements, all filled with `value`."),
        OpDef("concat", "movement", (1, None), infer_concat, ref_concat,
              attrs={"axis": Attr("int")}, vjp=vjp_concat, normalize=normalize_concat,
              doc="Join operands along `axis`; other axes must match."),
    )

"""The fuse pass: golden schedules (one per fusion kind and per rejection reason), kernel counts
of the textbook composites, the unfused baseline, and a hypothesis property test: on random
graphs the fused and unfused schedules, run by the kernel-IR interpreter in a planned arena,
equal the graph reference, and fusion never adds kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.backends.reference.kernel_interp import run_schedule
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.ir.kernel import ConvKernel, Load, LoopKernel, MatmulKernel, Var, linearize, walk
from graphc.ir.kernel_text import print_schedule
from graphc.ir.text import parse_graph
from graphc.passes import decompose
from graphc.passes.fuse import fuse
from graphc.passes.memory import check_memory_plan, plan_memory

GOLDEN = Path(__file__).parent / "golden_fuse"
CASES = sorted(p.stem for p in GOLDEN.glob("*.gir"))


def _options(text: str) -> dict:
    first = text.splitlines()[0]
    if not first.startswith("// fuse options:"):
        return {}
    pairs = (kv.split("=") for kv in first.split(":", 1)[1].split(","))
    return {k.strip(): int(v) for k, v in pairs}


def _random_inputs(graph, rng) -> dict[str, np.ndarray]:
    out = {}
    for v in graph.inputs:
        if v.dtype.startswith("i"):
            out[v.node.attrs["name"]] = rng.integers(0, 3, v.shape).astype(v.dtype.replace(
                "i", "int"))
        else:
            out[v.node.attrs["name"]] = rng.standard_normal(v.shape).astype(np.float32)
    return out


def check_schedule(graph, inputs, rtol=2e-5, atol=2e-6, **options):
    """Fused and unfused schedules, run in a planned arena, equal the graph reference."""
    want = run_graph(graph, inputs)
    scheds = []
    for on in (False, True):
        s = plan_memory(fuse(graph, fuse=on, **options))
        check_memory_plan(s)
        got = run_schedule(s, inputs)
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, err_msg=name)
        scheds.append(s)
    return scheds


@pytest.mark.parametrize("case", CASES)
def test_golden_schedule(case, rng):
    text = (GOLDEN / f"{case}.gir").read_text()
    graph = parse_graph(text)
    graph = graph.with_param_values({v.node.attrs["name"]: rng.standard_normal(v.shape).astype(
        np.float32) for v in graph.params})
    sched = fuse(graph, **_options(text))
    assert print_schedule(sched, explain=True) == (GOLDEN / f"{case}.kernels").read_text()
    check_schedule(graph, _random_inputs(graph, rng), **_options(text))


def test_golden_cases_cover_every_rejection_reason():
    texts = "".join((GOLDEN / f"{c}.kernels").read_text() for c in CASES)
    for reason in ("cycle", "index mismatch", "shape mismatch", "reduction mismatch",
                   "template boundary", "recompute cap", "size cap", "library boundary",
                   "index cap"):
        assert f": {reason}: " in texts, reason


# -- kernel counts of the composites ---------------------------------------------------------------


def _fused(build, inputs, rng):
    b = Builder("t", seed=0)
    outs = build(b)
    g = decompose(b.build(outputs=outs))
    unfused, fused = check_schedule(g, inputs(rng))
    return g, unfused, fused


def test_softmax_and_log_softmax_are_one_kernel(rng):
    for op in ("softmax", "log_softmax"):
        g, unfused, fused = _fused(
            lambda b, op=op: {"y": b.op(op, b.input("x", (6, 10)), axis=-1)},
            lambda r: {"x": r.standard_normal((6, 10)).astype(np.float32) * 3}, rng)
        assert len(fused.kernels) == 1 <= 2 < len(unfused.kernels) == len(g.nodes)
        (k,) = fused.kernels
        assert isinstance(k, LoopKernel) and k.domain == (6,) and k.reduce_domain == (10,)


def test_concat_of_many_pieces_is_a_select_tree_of_logarithmic_depth(rng):
    """An LSTM over T steps concatenates T outputs: the kernel picks each element's piece by a
    balanced tree of selects, not a chain of T (which took O(T) per element and overflowed the
    expression walkers at T = 256)."""
    n = 300
    b = Builder("cat")
    x = b.input("x", (n, 5))
    pieces = [b.op("slice", x, start=((7 * k) % n, 0), stop=((7 * k) % n + 1, 5), step=(1, 1))
              for k in range(n)]
    b.output("y", b.op("concat", *pieces, axis=0).exp())
    g = decompose(b.build())
    sched = fuse(g)

    def depth(e) -> int:
        kids = e.children()
        own = 1 if getattr(e, "op", None) == "select" else 0
        return own + max((depth(c) for c in kids), default=0)

    depths = [depth(s.value) for k in sched.kernels for s in k.stores]
    assert max(depths) == 9  # ceil(log2(300)): the concatenation's kernel
    assert "select" in print_schedule(sched)
    xs = {"x": rng.standard_normal((n, 5)).astype(np.float32)}
    want = run_graph(g, xs)["y"]
    got = run_schedule(plan_memory(sched), xs)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_chain_of_thousands_of_elementwise_ops_fuses_into_capped_kernels(rng):
    """A 6000-op chain: the fuser's walks are loops, not recursion (Python's stack ended at a
    few hundred ops), and it stays linear; kernels are cut at the member cap."""
    b = Builder("chain")
    x = b.input("x", (40,))
    y = x
    for _ in range(3000):
        y = y * 0.999 + 0.001
    b.output("y", y)
    g = decompose(b.build())
    sched = fuse(g)
    assert 6000 / 96 <= len(sched.kernels) <= 6000 / 96 + 2
    xs = {"x": rng.standard_normal(40).astype(np.float32)}
    np.testing.assert_allclose(run_schedule(plan_memory(sched), xs)["y"],
                               run_graph(g, xs)["y"], rtol=1e-5)


def test_cross_entropy_is_two_kernels(rng):
    def build(b):
        return {"loss": b.cross_entropy(b.input("logits", (5, 7)), b.input("labels", (5,),
                                                                           "i64"))}

    def inputs(r):
        return {"logits": r.standard_normal((5, 7)).astype(np.float32),
                "labels": r.integers(0, 7, 5)}

    _, unfused, fused = _fused(build, inputs, rng)
    assert len(fused.kernels) <= 2 < len(unfused.kernels)


def test_batch_norm_statistics_are_one_sweep_and_training_forward_one_kernel(rng):
    def build(b):
        x = b.input("x", (4, 3, 5, 5))
        y, m, v = b.batch_norm(x, b.param("g", (3,), init="normal"),
                               b.param("b", (3,), init="normal"),
                               b.param("rm", (3,), init="zeros", frozen=True),
                               b.param("rv", (3,), init="ones", frozen=True), training=True)
        return {"y": y, "m": m, "v": v}

    _, unfused, fused = _fused(
        build, lambda r: {"x": r.standard_normal((4, 3, 5, 5)).astype(np.float32)}, rng)
    (k,) = fused.kernels
    assert k.domain == (3,) and k.reduce_domain == (4, 5, 5)
    sums = [r for sw in k.sweeps for r in sw.reductions]
    assert len(sums) == 2  # mean and variance, over the same rows, in the one kernel
    assert len(unfused.kernels) > 10


def test_dense_bias_relu_is_one_matmul_with_epilogue(rng):
    def build(b):
        x = b.input("x", (4, 6))
        return {"h": b.dense(x, b.param("w", (6, 5)), b.param("bias", (5,), init="normal"),
                             activation="relu")}

    _, unfused, fused = _fused(build, lambda r: {"x": r.standard_normal((4, 6)).astype(
        np.float32)}, rng)
    (k,) = fused.kernels
    assert isinstance(k, MatmulKernel) and len(unfused.kernels) == 3
    (st_,) = k.stores
    assert "relu(add(acc, %" in print_schedule(fused)


def test_activation_between_two_matmuls_is_the_first_ones_epilogue(rng):
    """dense -> relu -> dense: the relu joins the first matmul's epilogue (stored once, free
    in registers), not the second matmul's operand (a prologue there is staged: one more pass
    over the operand before the GEMM)."""
    def build(b):
        x = b.input("x", (8, 6))
        h = b.dense(x, b.param("w1", (6, 5)), b.param("b1", (5,), init="normal"),
                    activation="relu")
        return {"y": b.dense(h, b.param("w2", (5, 3)), b.param("b2", (3,), init="normal"))}

    _, _, fused = _fused(build, lambda r: {"x": r.standard_normal((8, 6)).astype(np.float32)},
                         rng)
    first, second = fused.kernels
    assert isinstance(first, MatmulKernel) and isinstance(second, MatmulKernel)
    text = print_schedule(fused)
    assert "relu(add(acc, %" in text and "a[m, k] = relu" not in text


@pytest.mark.parametrize("act", ["silu", "gelu_tanh", "gelu_erf", "relu"])
@pytest.mark.parametrize("keep_z", [False, True])
def test_activation_reading_its_input_twice_is_the_epilogue(act, keep_z, rng):
    """dense -> SiLU/GELU -> dense: the activation reads the pre-activation z in several nodes
    (z·σ(z)). Its whole cone joins the first matmul's epilogue, which stores the activation
    (and z where z is also an output), and the second matmul reads it as a plain operand:
    left to the second matmul's operand, the final product would make the epilogue store its
    operands z and σ(z) instead. A relu of a z that is stored anyway stays on the second
    matmul's operand: there it costs no store at all."""
    def build(b):
        x = b.input("x", (8, 6))
        z = b.dense(x, b.param("w1", (6, 5)), b.param("b1", (5,), init="normal"))
        h = {"silu": lambda: z * z.sigmoid(),
             "gelu_tanh": lambda: b.gelu(z, approximate="tanh"),
             "gelu_erf": lambda: b.gelu(z),
             "relu": lambda: z.relu()}[act]()
        y = b.dense(h, b.param("w2", (5, 3)), b.param("b2", (3,), init="normal"))
        return {"y": y, "z": z} if keep_z else {"y": y}

    _, _, fused = _fused(build, lambda r: {"x": r.standard_normal((8, 6)).astype(np.float32)},
                         rng)
    first, second = fused.kernels
    assert isinstance(first, MatmulKernel) and isinstance(second, MatmulKernel)
    stored = {st_.buffer for st_ in first.stores}
    if act == "relu" and keep_z:
        assert len(stored) == 1 and "a[m, k] = relu" in print_schedule(fused)
        return
    assert isinstance(second.a.value, Load)
    assert second.a.value.buffer in stored and len(stored) == 1 + keep_z


def test_activation_read_by_a_loop_kernel_stays_with_it(rng):
    """dense -> SiLU -> mean: a loop kernel takes the activation as it is, in the same pass as
    its reduction, so the matmul's epilogue stores z alone and the loop computes z·σ(z)."""
    def build(b):
        x = b.input("x", (8, 6))
        z = b.dense(x, b.param("w1", (6, 5)), b.param("b1", (5,), init="normal"))
        return {"y": (z * z.sigmoid()).mean((1,))}

    _, _, fused = _fused(build, lambda r: {"x": r.standard_normal((8, 6)).astype(np.float32)},
                         rng)
    first, second = fused.kernels
    assert isinstance(first, MatmulKernel) and isinstance(second, LoopKernel)
    assert len(first.stores) == 1 and "sigmoid" not in print_schedule(fused).split("loop(")[0]


def test_conv_batch_norm_inference_relu_is_one_conv_with_epilogue(rng):
    def build(b):
        x = b.input("x", (2, 3, 6, 6))
        c = b.conv2d(x, b.param("w", (4, 3, 3, 3)), b.param("cb", (4,), init="normal"),
                     padding="same")
        y = b.batch_norm(c, b.param("g", (4,), init="normal"), b.param("b", (4,),
                                                                       init="normal"),
                         b.param("rm", (4,), init="normal", frozen=True),
                         b.param("rv", (4,), init="ones", frozen=True), training=False)
        return {"y": y.relu()}

    _, unfused, fused = _fused(build, lambda r: {"x": r.standard_normal((2, 3, 6, 6)).astype(
        np.float32)}, rng)
    assert len(fused.kernels) == 1 and isinstance(fused.kernels[0], ConvKernel)
    assert len(unfused.kernels) > 5


@pytest.mark.parametrize("chans", [16, 48])
def test_pointwise_conv_over_enough_channels_is_a_matmul_with_affine_operands(chans, rng):
    """A 1x1 convolution over >= 32 channels lowers as a batched matmul, w[O, C] @ x[n][C, HW]
    (bias, batch norm and relu in its epilogue): its split output plane joins back into the
    plain column index wherever it is linearized, so every load and store is affine. Over 16
    channels it stays a convolution."""
    def build(b):
        x = b.input("x", (2, chans, 5, 7))
        c = b.conv2d(x, b.param("w", (24, chans, 1, 1)), b.param("cb", (24,), init="normal"))
        y = b.batch_norm(c, b.param("g", (24,), init="normal"), b.param("b", (24,),
                                                                         init="normal"),
                         b.param("rm", (24,), init="normal", frozen=True),
                         b.param("rv", (24,), init="ones", frozen=True), training=False)
        return {"y": y.relu()}

    _, _, fused = _fused(build, lambda r: {"x": r.standard_normal((2, chans, 5, 7)).astype(
        np.float32)}, rng)
    (k,) = fused.kernels
    if chans < 32:
        assert isinstance(k, ConvKernel)
        return
    assert isinstance(k, MatmulKernel) and (k.batch, k.m, k.n, k.k) == ((2,), 24, 35, chans)
    shapes = {name: buf.type.shape for name, buf in fused.buffers.items()}
    loads = [e for e in walk(k.expr_roots()) if isinstance(e, Load)]
    stores = list(k.stores)
    assert any(e.buffer == "x" for e in loads) and stores
    for buf, index in [(e.buffer, e.index) for e in loads] + [(s.buffer, s.index) for s in stores]:
        flat = linearize(index, shapes[buf])
        assert all(isinstance(a, Var) for a, _ in flat.terms), (buf, str(flat))


def test_unfused_baseline_is_one_kernel_per_primitive():
    g = parse_graph((GOLDEN / "softmax_persistent.gir").read_text())
    s = fuse(g, fuse=False)
    assert [k.origin for k in s.kernels] == [(n,) for n in ("m", "d", "e", "s", "y")]
    assert s.rejections == ()


def test_fuse_refuses_composites():
    b = Builder("t")
    g = b.build(outputs={"y": b.softmax(b.input("x", (2, 3)), axis=1)})
    with pytest.raises(GraphError, match="composite 'softmax'; run decompose first"):
        fuse(g)


# -- property test ---------------------------------------------------------------------------------

UNARY = ("neg", "abs", "relu", "sigmoid", "tanh")


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(p == q or p == 1 or q == 1 for p, q in zip(a[::-1], b[::-1], strict=False))


def _grow(b: Builder, data, vals: list) -> None:
    """Apply one random op to one or two of the values built so far."""
    x = data.draw(st.sampled_from(vals[-3:]))  # mostly chains, sometimes fan-out
    kind = data.draw(st.sampled_from(("unary", "binary", "reduce", "transpose", "reshape",
                                      "broadcast", "slice", "pad", "concat", "matmul",
                                      "expchain", "reduce", "binary", "matmul")))
    r = x.ndim
    if kind == "matmul" and r < 2:
        x = b.reshape(x, (1, x.type.size))
        r = 2
    if kind == "unary" or (kind in ("reduce", "slice", "pad", "concat", "reshape") and not r) \
            or (kind == "transpose" and r < 2) or (kind == "broadcast" and r >= 4):
        kind = "unary"
        vals.append(b.op(data.draw(st.sampled_from(UNARY)), x))
    elif kind == "expchain":
        vals.append(b.exp(b.tanh(x)))
    elif kind == "binary":
        same = [v for v in vals if _broadcasts(v.shape, x.shape)]
        y = data.draw(st.sampled_from(same))
        op = data.draw(st.sampled_from(("add", "sub", "mul", "maximum", "safe_div")))
        if op == "safe_div":
            vals.append(x / (b.abs(y) + 1.0))
        else:
            vals.append(b.op(op, x, y))
    elif kind == "reduce":
        axes = data.draw(st.sets(st.integers(0, r - 1), min_size=1))
        op = data.draw(st.sampled_from(("reduce_sum", "reduce_max")))
        vals.append(b.op(op, x, axes=tuple(sorted(axes)), keepdims=data.draw(st.booleans())))
    elif kind == "transpose":
        vals.append(x.transpose(data.draw(st.permutations(range(r)))))
    elif kind == "reshape":
        size = x.type.size
        first = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
        vals.append(b.reshape(x, (first, size // first)))
    elif kind == "broadcast":
        vals.append(b.op("broadcast", x, shape=(data.draw(st.integers(2, 3)),) + x.shape))
    elif kind == "slice":
        start = tuple(data.draw(st.integers(0, max(d - 1, 0))) for d in x.shape)
        stop = tuple(data.draw(st.integers(s + 1, d)) if d else 0 for s, d in
                     zip(start, x.shape, strict=True))
        step = tuple(data.draw(st.integers(1, 2)) for _ in x.shape)
        vals.append(b.op("slice", x, start=start, stop=stop, step=step))
    elif kind == "pad":
        low = tuple(data.draw(st.integers(-1, 2)) if d > 1 else 0 for d in x.shape)
        high = tuple(data.draw(st.integers(0, 2)) for _ in x.shape)
        interior = tuple(data.draw(st.integers(0, 1)) for _ in x.shape)
        vals.append(b.op("pad", x, low=low, high=high, interior=interior, value=0.5))
    elif kind == "concat":
        axis = data.draw(st.integers(0, r - 1))
        vals.append(b.op("concat", x, b.tanh(x), axis=axis))
    elif kind == "matmul":
        w = b.param(f"w{len(vals)}", (x.shape[-1], data.draw(st.integers(1, 4))))
        vals.append(b.tanh(x @ w))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(3, 10), st.data())
def test_fused_schedules_equal_the_graph_reference(shape, steps, data):
    b = Builder("random", seed=1)
    vals = [b.input("x", tuple(shape)), b.input("z", tuple(shape[-1:]))]
    for _ in range(steps):
        _grow(b, data, vals)
    picks = data.draw(st.sets(st.integers(2, len(vals) - 1), min_size=1, max_size=3)) \
        if len(vals) > 2 else {0}
    g = b.build(outputs={f"o{i}": vals[i] for i in sorted(picks)})
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(shape).astype(np.float32),
              "z": rng.standard_normal(shape[-1:]).astype(np.float32)}
    unfused, fused = check_schedule(g, inputs, rtol=1e-4, atol=1e-5)
    assert len(fused.kernels) <= len(unfused.kernels)
    assert fused.memory.arena_bytes <= fused.memory.naive_bytes


def test_cli_show_kernels_and_explain(tmp_path, capsys):
    from graphc.cli import main

    path = tmp_path / "softmax.gir"
    path.write_text((GOLDEN / "softmax_persistent.gir").read_text())
    assert main(["show", str(path), "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "kernel k0 loop(i0 < 4; r0 < 8)  // %m, %d, %e, %s, %y" in out
    assert "members:" not in out
    assert main(["show", str(path), "--explain"]) == 0
    assert "// members: %m = reduce_max, %d = sub" in capsys.readouterr().out
    assert main(["show", str(path), "--kernels", "--no-fuse"]) == 0
    assert capsys.readouterr().out.count("  kernel k") == 5


def test_masked_pieces_read_through_reshapes_without_divisions(rng):
    """rotate-half of heads split out of a [B, T, H*D] tensor: under each concatenated piece's
    mask (d < D/2, d >= D/2) the reshape's division by the row length folds away, so every
    load's index is affine (no // or %), and the values stay the reference's."""
    from graphc.ir.kernel import FloorDiv, Load, Mod, walk

    B, T, H, D = 2, 5, 3, 8

    def build(b):
        x = b.input("x", (B, T, H * D))
        heads = b.transpose(b.reshape(x, (B, T, H, D)), perm=(0, 2, 1, 3))
        lo = b.op("slice", heads, start=(0, 0, 0, 0), stop=(B, H, T, D // 2), step=(1, 1, 1, 1))
        hi = b.op("slice", heads, start=(0, 0, 0, D // 2), stop=(B, H, T, D), step=(1, 1, 1, 1))
        return {"y": heads * 0.5 + b.concat(-hi, lo, axis=3)}

    _, _, fused = _fused(build, lambda r: {"x": r.standard_normal((B, T, H * D)).astype(
        np.float32)}, rng)
    loads = [e for k in fused.kernels for e in walk([s.value for s in k.stores])
             if isinstance(e, Load)]
    assert loads
    for load in loads:
        atoms = [a for ix in load.index for a, _ in ix.terms]
        assert not any(isinstance(a, (FloorDiv, Mod)) for a in atoms), str(load)


@pytest.mark.parametrize("pieces,leaf,fused", [(4, "load", True), (5, "load", False),
                                               (2, "tanh", False), (64, "load", False)])
def test_a_reduction_reads_only_small_cheap_concatenations(pieces, leaf, fused, rng):
    """A reduction's sweep evaluates a concatenation's whole select tree for every element: it
    may read at most 4 pieces, and pieces computing next to nothing; otherwise the
    concatenation is stored first and the reduction reads the buffer."""
    b = Builder("t", seed=0)
    xs = [b.input(f"x{t}", (1, 6, 8)) for t in range(pieces)]
    hs = b.concat(*[x.tanh() if leaf == "tanh" else x for x in xs], axis=0)
    g = decompose(b.build(outputs={"loss": (hs * hs).mean()}))
    _, sched = check_schedule(g, {f"x{t}": rng.standard_normal((1, 6, 8)).astype(np.float32)
                                  for t in range(pieces)})
    (red,) = [k for k in sched.kernels if isinstance(k, LoopKernel) and k.reduce_domain]
    reads = {e.buffer for e in walk(red.expr_roots()) if isinstance(e, Load)}
    assert (reads == {f"x{t}" for t in range(pieces)}) == fused, reads
    why = "recompute cap" if leaf == "tanh" else "size cap"
    assert fused or any(r.reason == why for r in sched.rejections)


def test_a_long_chain_beside_a_matmul_fuses(rng):
    """A pointwise chain longer than Python's recursion limit (an unrolled cell state over
    hundreds of steps) read beside a function of a matmul's result: fusion walks it without
    recursing."""
    b = Builder("long")
    x, w = b.input("x", (4, 8)), b.input("w", (8, 8))
    c = x
    for _ in range(1500):
        c = c * 0.999 + 0.001
    z = x @ w
    g = b.build(outputs={"y": z * z.sigmoid() * c})  # SiLU times the chain
    feeds = {"x": rng.standard_normal((4, 8), np.float32),
             "w": rng.standard_normal((8, 8), np.float32)}
    got = run_schedule(plan_memory(fuse(g)), feeds)
    np.testing.assert_allclose(got["y"], run_graph(g, feeds)["y"], rtol=1e-5, atol=1e-5)

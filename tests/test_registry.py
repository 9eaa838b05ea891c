"""The op registry: every op declares a type rule and a reference; every differentiable
primitive a VJP rule; every composite a decomposition. Prints the table with -s."""

from __future__ import annotations

import graphc.ir.ops  # noqa: F401  (registers every family)
from graphc.ir.registry import OPS, composites, primitives

# The op set graphc promises (see the README's op table). A missing one fails here.
REQUIRED_PRIMITIVES = {
    "neg", "abs", "exp", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid", "tanh",
    "relu", "softplus", "sign", "erf", "floor", "ceil", "round", "sin", "cos", "atan",
    "add", "sub", "mul", "div",
    "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "select", "cast", "reduce_sum", "reduce_max", "argmax",
    "reshape", "transpose", "reverse", "broadcast", "slice", "pad", "concat", "matmul", "conv",
    "reduce_window", "select_scatter", "take", "scatter_add", "iota", "random_uniform",
    "constant",
}
REQUIRED_COMPOSITES = {
    "mean", "dense", "conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "global_avg_pool", "batch_norm", "layer_norm", "gelu", "softmax", "log_softmax",
    "cross_entropy", "mse",
    "weight_decay", "dropout", "one_hot", "flatten", "residual_block", "rnn_cell", "lstm_cell",
    "rnn", "lstm", "gru_cell", "gru", "random_normal",
}
NON_DIFFERENTIABLE = {"eq", "ne", "lt", "le", "gt", "ge", "argmax", "iota", "random_uniform",
                      "constant", "input", "param"}


def test_every_required_op_is_registered():
    missing = (REQUIRED_PRIMITIVES | REQUIRED_COMPOSITES) - set(OPS)
    assert not missing, f"ops not registered: {sorted(missing)}"
    assert REQUIRED_COMPOSITES <= set(composites())
    assert REQUIRED_PRIMITIVES <= set(primitives())


def test_every_op_declares_its_rules():
    for name, d in OPS.items():
        assert callable(d.infer) and callable(d.reference), name
        if d.primitive:
            if name in NON_DIFFERENTIABLE:
                assert not d.differentiable, f"{name} must be marked non-differentiable"
            elif d.differentiable:
                assert callable(d.vjp), f"primitive {name} lacks a VJP rule"
        else:
            assert callable(d.decompose), f"composite {name} lacks a decomposition"


def test_print_registry_table(capsys):
    rows = [f"{n:16s} {d.family:14s} {'primitive' if d.primitive else 'composite':10s} "
            f"{'vjp' if d.vjp else ('decomp' if d.decompose else '-')}"
            for n, d in sorted(OPS.items())]
    print("\n".join(rows))
    assert len(rows) == len(OPS)

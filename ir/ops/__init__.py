"""The op set. Each family module declares its ops (schema, type rule, reference, VJP or
decomposition) side by side and registers them here, once, in this order."""

from ..registry import OPS, composites, get_op, primitives
from . import (
    composite_nn,
    composite_rnn,
    elementwise,
    indexing,
    linalg,
    movement,
    random,
    reduction,
    sources,
    window,
)

for _family in (sources, elementwise, reduction, movement, linalg, window, indexing, random,
                composite_nn, composite_rnn):
    _family.register_ops()

__all__ = ["OPS", "composites", "get_op", "primitives"]

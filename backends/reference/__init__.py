"""The reference backend: runs graphs op by op with numpy. The oracle for every other backend."""

from .graph_runner import check_inputs, run_graph

__all__ = ["check_inputs", "run_graph"]

"""`graphc bench`: graphc against numpy, PyTorch (eager, torch.compile) and ONNX Runtime on the
same inputs, with correctness checks, physical anchors and a JSON record of every sample.

    from graphc.bench import BenchConfig, run_bench, get_workload
    inst = get_workload("softmax").make(quick=True)   # graph, inputs, peer implementations
    doc = run_bench(BenchConfig(target="llvm", quick=True, workloads=("softmax",)))

Importing this package loads neither torch nor onnxruntime; contenders import them when run.
"""

from .runner import BenchConfig, run_bench
from .workloads import Instance, Workload, all_workloads, get_workload, select_workloads

__all__ = ["BenchConfig", "Instance", "Workload", "all_workloads", "get_workload", "run_bench",
           "select_workloads"]

"""Launching stored cubins through the CUDA driver API (ctypes on libcuda), without Triton.

A package compiled ahead of time carries each kernel's cubin and its launch metadata; on the GPU
we load the cubin into torch's (primary) context with `cuModuleLoadData`, look the entry up, raise
the dynamic shared memory limit when a kernel needs more than 48 KiB, and `cuLaunchKernel` on
torch's current stream (so a CUDA graph capture records it like any other launch).

Triton kernels take our pointers first, then its own scratch pointers (global, profile): we pass
a scratch buffer when the kernel asked for global scratch, null otherwise.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from graphc.ir.errors import GraphError

CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


@functools.cache
def driver() -> CudaDriver:
    return CudaDriver()


class CudaDriver:
    """The few libcuda entry points a launch needs; every result code is checked."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise GraphError(f"cannot load the CUDA driver (libcuda.so.1): {e}") from e
        L = self.lib
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        L.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(cp)]
        L.cuCtxGetCurrent.argtypes = [ctypes.POINTER(vp)]
        L.cuModuleLoadData.argtypes = [ctypes.POINTER(vp), cp]
        L.cuModuleGetFunction.argtypes = [ctypes.POINTER(vp), vp, cp]
        L.cuFuncSetAttribute.argtypes = [vp, ctypes.c_int, ctypes.c_int]
        L.cuLaunchKernel.argtypes = [vp, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                     vp, ctypes.POINTER(vp), ctypes.POINTER(vp)]

    def check(self, code: int, what: str) -> None:
        if code != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(code, ctypes.byref(name))
            text = name.value.decode() if name.value else f"error {code}"
            raise GraphError(f"CUDA driver: {what} failed: {text}")

    def ensure_context(self) -> None:
        """Make torch's primary context current on this thread (torch creates it lazily)."""
        import torch

        torch.cuda.init()
        torch.empty(1, device="cuda")  # the runtime API binds the primary context
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            raise GraphError("CUDA driver: no current context after torch initialized CUDA")

    def load(self, image: bytes, entry: str, shared: int) -> int:
        self.ensure_context()
        module = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), image), "cuModuleLoadData")
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), module, entry.encode()),
                   f"cuModuleGetFunction({entry})")
        if shared > 48 * 1024:
            self.check(self.lib.cuFuncSetAttribute(
                fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared),
                f"cuFuncSetAttribute({entry}, shared={shared})")
        return fn.value

    def launch(self, fn: int, grid: tuple[int, int, int], threads: int, shared: int,
               stream: int, params: Any) -> None:
        """`params`: a ctypes array of pointers, one per kernel parameter, to its value."""
        code = self.lib.cuLaunchKernel(fn, grid[0], grid[1], grid[2], threads, 1, 1, shared,
                                       stream, params, None)
        if code:
            self.check(code, "cuLaunchKernel")


class CubinLaunch:
    """Launch one stored kernel binary (see the module docstring).

    A launch costs what the driver call costs: the parameter block (one 8-byte slot per kernel
    parameter and the array of pointers to the slots that cuLaunchKernel reads) is built once,
    each call only writes the buffers' addresses into it, and the stream comes from torch's raw
    current-stream query instead of a Stream object."""

    def __init__(self, binary: Any, spec: Any) -> None:
        self.binary = binary
        self.spec = spec
        self.fn: int | None = None
        self.scratch = None
        extra = binary.num_params - len(spec.args)
        if extra < 0:
            raise GraphError(f"kernel {spec.kernel}: the cubin takes {binary.num_params} "
                             f"parameters, the launch passes {len(spec.args)}")
        self.extra = extra
        n = max(binary.num_params, 1)
        self.values = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.values)
        self.params = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        self.grid = tuple(spec.grid)
        self.threads = 32 * binary.num_warps
        self.stream: Any = None

    def _load(self) -> None:
        """Load the cubin into the current context, fill the scratch slots, bind the stream
        query to the current device (the module lives in that device's context)."""
        import torch

        self.fn = driver().load(self.binary.cubin, self.binary.entry, self.binary.shared)
        for i, p in enumerate(self._scratch()):
            self.values[len(self.spec.args) + i] = p
        device = torch.cuda.current_device()
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        self.stream = ((lambda: raw(device)) if raw is not None
                       else (lambda: torch.cuda.current_stream(device).cuda_stream))

    def _scratch(self) -> list[int]:
        out = [0] * self.extra
        size = self.binary.global_scratch_size
        if size and self.extra:
            if self.scratch is None:
                import torch

                programs = self.spec.grid[0] * self.spec.grid[1] * self.spec.grid[2]
                self.scratch = torch.empty(size * programs + self.binary.global_scratch_align,
                                           dtype=torch.uint8, device="cuda")
            base = self.scratch.data_ptr()
            align = max(self.binary.global_scratch_align, 1)
            out[0] = base + (-base) % align
        return out

    def __call__(self, args: list[Any]) -> None:
        if self.fn is None:
            self._load()
        if len(args) != len(self.spec.args):
            raise GraphError(f"kernel {self.spec.kernel}: {len(args)} buffers passed, the launch "
                             f"table names {len(self.spec.args)}")
        values = self.values
        for i, t in enumerate(args):
            p = t.data_ptr()
            if p % 16:
                raise GraphError(f"kernel {self.spec.kernel}: buffer %{self.spec.args[i]} is not "
                                 f"16-byte aligned (the cubin was compiled assuming it)")
            values[i] = p
        driver().launch(self.fn, self.grid, self.threads, self.binary.shared, self.stream(),
                        self.params)

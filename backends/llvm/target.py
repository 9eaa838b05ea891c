"""Target machines, the O3 pipeline, JIT compilation and ahead-of-time shared libraries.

Note: what works with llvmlite (measured, see the project's field notes)
-----------------------------------------------------------------------
* Vectorization only happens when the new-pass-manager pipeline runs (`default<O3>` with loop
  and SLP vectorization switched on); `opt=3` on the TargetMachine alone leaves scalar code.
  `optimize_module` is that pipeline, `compile_module` always runs it first.
* The TargetMachine is built for the host CPU name *and* its feature string, so LLVM picks
  512-bit vectors where the CPU has AVX-512. `TargetSpec.portable()` is the `x86-64-v3`
  baseline (AVX2 + FMA) for shared libraries that must run on other machines.
* MCJIT does not report unresolved external symbols: calling one segfaults. `compile_module`
  resolves every declared external with `llvm.address_of_symbol` *before* the engine exists and
  raises `LLVMBackendError` naming the missing ones.
* `create_mcjit_compiler` takes ownership of its TargetMachine: each engine gets a fresh one.
* AOT: `emit_object` (reloc `pic`) then `cc -shared`; the library depends on libc (and
  libgomp when a parallel-for is present) and is loaded with ctypes, llvmlite never imported
  (`aot_loader.py`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.ir.errors import GraphError

#: The portable CPU baseline: AVX2 + FMA + BMI2, every x86 CPU since Haswell / Zen 1.
PORTABLE_CPU = "x86-64-v3"


class LLVMBackendError(GraphError):
    """LLVM rejected a module, a symbol is missing, or the system linker failed."""


@cache
def init_llvm() -> None:
    """Initialize LLVM's native target and asm printer once per process."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@dataclass(frozen=True)
class TargetSpec:
    """Which machine code to produce: CPU name, feature string, optimization level.

    `TargetSpec.host()` targets exactly this CPU (AVX-512 where present);
    `TargetSpec.portable()` targets `x86-64-v3` and runs on any AVX2 + FMA CPU.
    """

    cpu: str
    features: str
    opt_level: int = 3

    @staticmethod
    def host(opt_level: int = 3, *, prefer_512: bool = True) -> TargetSpec:
        """This CPU. With `prefer_512`, AVX-512 CPUs whose LLVM tuning prefers 256-bit vectors
        (Intel server and client cores) get 512-bit vectors anyway: our kernels are
        compute-dense loops where the wider registers win."""
        init_llvm()
        features = llvm.get_host_cpu_features().flatten()
        if prefer_512 and "+avx512f" in features.split(","):
            features += ",-prefer-256-bit"
        return TargetSpec(llvm.get_host_cpu_name(), features, opt_level)

    @staticmethod
    def portable(opt_level: int = 3) -> TargetSpec:
        return TargetSpec(PORTABLE_CPU, "", opt_level)

    @property
    def has_avx512(self) -> bool:
        """True when the target has 512-bit float vectors (avx512f)."""
        return "+avx512f" in self.features.split(",")

    @property
    def vector_bits(self) -> int:
        """Width of the widest float vector register the target has."""
        return 512 if self.has_avx512 else 256

    def target_machine(self, *, reloc: str = "default", jit: bool = False) -> llvm.TargetMachine:
        """A fresh TargetMachine (MCJIT takes ownership of the one it is given)."""
        init_llvm()
        target = llvm.Target.from_default_triple()
        return target.create_target_machine(cpu=self.cpu, features=self.features,
                                            opt=self.opt_level, reloc=reloc,
                                            codemodel="jitdefault" if jit else "default",
                                            jit=jit)


@dataclass
class CompileTimes:
    """Wall-clock seconds spent in each compilation phase."""

    parse_s: float = 0.0
    optimize_s: float = 0.0
    codegen_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.parse_s + self.optimize_s + self.codegen_s


def parse_module(module: ir.Module | str, spec: TargetSpec, name: str = "graphc"
                 ) -> llvm.ModuleRef:
    """Parse and verify textual IR or an llvmlite `ir.Module` and set `spec`'s triple and data
    layout (the vectorizers' cost models need them). Errors become LLVMBackendError."""
    init_llvm()
    text = str(module)
    try:
        ref = llvm.parse_assembly(text)
        ref.verify()
    except RuntimeError as e:
        raise LLVMBackendError(f"LLVM module {name!r} is invalid: {e}") from None
    ref.name = name
    tm = spec.target_machine()
    ref.triple = tm.triple
    ref.data_layout = str(tm.target_data)
    return ref


def optimize_module(ref: llvm.ModuleRef, spec: TargetSpec) -> None:
    """Run the new-pass-manager `default<O{n}>` pipeline with loop and SLP vectorization on.

    The target machine is passed to the pass builder so the cost models (vector width,
    instruction costs) are those of `spec`'s CPU.
    """
    if spec.opt_level == 0:
        return
    tm = spec.target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=spec.opt_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pto.loop_interleaving = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(ref, pb)


def external_symbols(ref: llvm.ModuleRef) -> list[str]:
    """Names of the functions and globals a module declares but does not define.

    LLVM intrinsics (`llvm.*`) are not symbols: the code generator expands them.
    """
    names = [f.name for f in ref.functions if f.is_declaration and not f.name.startswith("llvm.")]
    names += [g.name for g in ref.global_variables if g.is_declaration]
    return sorted(names)


def check_symbols_resolvable(ref: llvm.ModuleRef, provided: frozenset[str] = frozenset()
                             ) -> None:
    """Raise LLVMBackendError naming every external symbol the process cannot resolve
    (`provided`: symbols that object files added to the engine define).

    MCJIT would otherwise crash at the first call through an unresolved symbol.
    """
    missing = [s for s in external_symbols(ref)
               if s not in provided and not llvm.address_of_symbol(s)]
    if any(s.startswith(("GOMP_", "omp_")) for s in missing):
        from .parallel import load_gomp  # IR text made elsewhere: libgomp may not be loaded yet

        load_gomp()
        missing = [s for s in missing if not llvm.address_of_symbol(s)]
    if missing:
        raise LLVMBackendError(
            f"LLVM module {ref.name!r} uses external symbol(s) {', '.join(missing)} that are not "
            "loaded in this process (load the library with "
            "llvmlite.binding.load_library_permanently or register it with add_symbol)")


@dataclass
class JitModule:
    """A module compiled to machine code in this process (MCJIT).

    The engine owns the machine code: a callable from `cfunc(name, restype, *argtypes)` keeps
    its JitModule alive; a raw `address(name)` does not. ctypes calls release the GIL.
    """

    engine: llvm.ExecutionEngine
    module: llvm.ModuleRef
    spec: TargetSpec
    times: CompileTimes
    optimized_ir: str
    _cfuncs: dict = field(default_factory=dict, repr=False)

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise LLVMBackendError(f"compiled module {self.module.name!r} has no function {name!r}")
        return addr

    def global_address(self, name: str) -> int:
        """The address of global variable `name` (valid while this module lives)."""
        addr = self.engine.get_global_value_address(name)
        if not addr:
            raise LLVMBackendError(f"compiled module {self.module.name!r} has no global {name!r}")
        return addr

    def function(self, name: str, restype, *argtypes):
        """`cfunc`, under the name `AotLibrary` gives it."""
        return self.cfunc(name, restype, *argtypes)

    def cfunc(self, name: str, restype, *argtypes):
        """A ctypes callable for function `name` with the given C signature."""
        key = (name, restype, argtypes)
        if key not in self._cfuncs:
            fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
            fn.jit_module = self  # the engine owns the code: keep it alive with the callable
            self._cfuncs[key] = fn
        return self._cfuncs[key]

    def assembly(self) -> str:
        """The machine code of the optimized module as assembly text (for inspection)."""
        return self.spec.target_machine().emit_assembly(self.module)


def compile_module(module: ir.Module | str, spec: TargetSpec | None = None, *,
                   name: str = "graphc", objects: Sequence[bytes] = (),
                   provides: frozenset[str] = frozenset()) -> JitModule:
    """Parse, verify, optimize (O3 + vectorizers) and JIT-compile `module` for `spec` (host).

    `objects` (object code, e.g. the runtime library's) are added to the engine; `provides`
    names the symbols they define. Raises LLVMBackendError for invalid IR or for any declared
    external symbol that the process cannot resolve (checked after optimization, which may add
    declarations).
    """
    spec = spec or TargetSpec.host()
    times = CompileTimes()
    t0 = time.perf_counter()
    ref = parse_module(module, spec, name)
    t1 = time.perf_counter()
    optimize_module(ref, spec)
    t2 = time.perf_counter()
    check_symbols_resolvable(ref, provides)
    optimized_ir = str(ref)
    engine = llvm.create_mcjit_compiler(ref, spec.target_machine(jit=True))
    for obj in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    engine.run_static_constructors()
    t3 = time.perf_counter()
    times.parse_s, times.optimize_s, times.codegen_s = t1 - t0, t2 - t1, t3 - t2
    return JitModule(engine, ref, spec, times, optimized_ir)


# Libraries the AOT linker may add, keyed by a symbol prefix that requires them.
_AOT_LIBRARIES = {"GOMP_": "gomp", "omp_": "gomp"}


def emit_object(module: ir.Module | str, spec: TargetSpec, *, name: str = "graphc") -> bytes:
    """Optimize `module` for `spec` and return position-independent ELF object code."""
    ref = parse_module(module, spec, name)
    optimize_module(ref, spec)
    return spec.target_machine(reloc="pic").emit_object(ref)


def emit_shared_library(module: ir.Module | str, path: str | os.PathLike,
                        spec: TargetSpec | None = None, *, name: str = "graphc",
                        objects: Sequence[bytes] = ()) -> CompileTimes:
    """Compile `module` ahead of time into a shared library at `path` (`cc -shared`), linked
    together with `objects` (object code, e.g. the runtime library's).

    The library is linked with `-z defs`, so a symbol that neither libc, libm nor libgomp
    provides is a link error (LLVMBackendError naming it) instead of a crash at load or call.
    Load it with `graphc.backends.llvm.aot_loader.load_library` (no llvmlite needed).
    """
    spec = spec or TargetSpec.host()
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise LLVMBackendError("emit_shared_library needs a C compiler driver (cc) to link")
    times = CompileTimes()
    t0 = time.perf_counter()
    ref = parse_module(module, spec, name)
    t1 = time.perf_counter()
    optimize_module(ref, spec)
    t2 = time.perf_counter()
    obj = spec.target_machine(reloc="pic").emit_object(ref)
    libs = sorted({lib for s in external_symbols(ref) for p, lib in _AOT_LIBRARIES.items()
                   if s.startswith(p)}
                  | {lib for o in objects for p, lib in _AOT_LIBRARIES.items()
                     if p.encode() in o})
    with tempfile.TemporaryDirectory(prefix="graphc-aot-") as tmp:
        obj_paths = []
        for i, data in enumerate([obj, *objects]):
            obj_paths.append(os.path.join(tmp, f"{name}.{i}.o"))
            with open(obj_paths[-1], "wb") as f:
                f.write(data)
        tmp_out = os.path.join(tmp, "out.so")
        cmd = [cc, "-shared", "-o", tmp_out, *obj_paths, "-Wl,-z,defs", "-lm", "-lc"]
        cmd += [f"-l{lib}" for lib in libs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LLVMBackendError(f"linking shared library {os.fspath(path)!r} failed "
                                   f"({' '.join(cmd[:2])} ...):\n{proc.stderr.strip()}")
        # Move into place atomically so a concurrent loader never sees a half-written file.
        shutil.move(tmp_out, os.fspath(path) + ".tmp")
        os.replace(os.fspath(path) + ".tmp", path)
    times.parse_s, times.optimize_s, times.codegen_s = t1 - t0, t2 - t1, time.perf_counter() - t2
    return times

"""AOT packages: a folder holding a versioned JSON manifest, the compiled code and the
parameters as `.npz`.

    model.gcpkg/
      manifest.json   format, version, target, signature, kernels, memory plan, target
                      requirements (CPU features / GPU archs), a sha256 of every other file
                      and a digest of the manifest itself
      params.npz      parameter values (loaded with allow_pickle=False: loading never unpickles)
      ...             the target's files (a shared library; PTX/cubin and launch metadata)

`load_package` checks the format version, the manifest's digest and every file's hash, then
lets the target's loader check its own requirements (CPU features, GPU arch) and build a
Program. The digest matters because the manifest carries what the compiled code trusts (the
arena size, the argument shapes every call is checked against): an edited or damaged manifest
is refused rather than run. The loaders import
neither llvmlite nor the compiler: an LLVM package runs through ctypes alone.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.program import Signature
from graphc.ir.errors import GraphError

FORMAT = "graphc-package"
VERSION = 2  # 2: the manifest carries its own digest
MANIFEST = "manifest.json"
PARAMS = "params.npz"

# target -> module with load_program(folder: Path, manifest: dict) -> Program
LOADERS: dict[str, str] = {
    "llvm": "graphc.backends.llvm.aot_loader",
    "triton": "graphc.backends.triton.aot",
}


class PackageError(GraphError):
    """A package that is missing, corrupted, of another format version or for another machine."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, its own `digest` field left out."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def _check_replaceable(path: Path) -> None:
    """Saving replaces only what is safe to lose: nothing, an empty folder or an earlier
    package. Anything else at `path` (a file, a folder of the user's) is refused, not deleted."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise PackageError(f"cannot write a package to {str(path)!r}: it exists and is not a "
                           "folder")
    if any(path.iterdir()) and not _is_package(path):
        raise PackageError(f"cannot write a package to {str(path)!r}: the folder is not empty "
                           "and is not a graphc package (refusing to replace it)")


def _is_package(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_package(exe, path: str | os.PathLike) -> Path:
    """Write `exe` (an Executable) as a package folder at `path`, replacing an earlier package
    there (never any other folder or file) once the new one is complete."""
    path = Path(path)
    _check_replaceable(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        target_info = exe.program.save(tmp)
        np.savez(tmp / PARAMS, **{k: np.asarray(v) for k, v in exe.params.items()})
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "target": exe.target,
            "signature": exe.signature.to_json(), "target_info": target_info, "files": files,
        }
        if exe.schedule is not None:
            manifest["kernels"] = [{"name": k.name, "kind": k.kind, "origin": list(k.origin)}
                                   for k in exe.schedule.kernels]
            plan = exe.schedule.memory
            if plan is not None:
                manifest["memory"] = {"arena_bytes": plan.arena_bytes,
                                      "naive_bytes": plan.naive_bytes,
                                      "lower_bound_bytes": plan.lower_bound,
                                      "offsets": dict(plan.offsets)}
        manifest["digest"] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _check_replaceable(path)  # again: something may have been put there meanwhile
        if path.exists():
            # two renames: `path` is never a half-deleted or half-written folder
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=parent))
            os.replace(path, old / "package")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise PackageError(f"{str(path)!r} is not a graphc package (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{str(mpath)!r}: corrupted manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{str(mpath)!r}: not a graphc package manifest")
    if manifest.get("version") != VERSION:
        raise PackageError(f"{str(path)!r}: package format version {manifest.get('version')} "
                           f"is not supported (this graphc reads version {VERSION})")
    if manifest.get("digest") != manifest_digest(manifest):
        raise PackageError(f"{str(mpath)!r}: the manifest does not match its digest (edited "
                           f"or corrupted)")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PackageError(f"{str(mpath)!r}: malformed manifest (no file table)")
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise PackageError(f"{str(path)!r}: file {rel!r} listed in the manifest is missing")
        got = sha256_file(f)
        if got != want:
            raise PackageError(f"{str(path)!r}: file {rel!r} does not match its hash in the "
                               f"manifest (corrupted or modified)")
    return manifest


def load_package(path: str | os.PathLike):
    """Load a package folder as an Executable, without recompiling anything."""
    from .compiler import Executable

    path = Path(path)
    manifest = read_manifest(path)
    try:
        target = manifest["target"]
        if not isinstance(target, str) or target not in LOADERS:
            raise PackageError(f"{str(path)!r}: no loader for target {target!r}")
        loader = importlib.import_module(LOADERS[target])
        program = loader.load_program(path, manifest)
        sig = Signature.from_json(manifest["signature"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # The digest matched: a manifest written like this came from a graphc that wrote
        # another layout than this one reads.
        raise PackageError(f"{str(path / MANIFEST)!r}: malformed manifest "
                           f"({type(e).__name__}: {e})") from None
    with np.load(path / PARAMS, allow_pickle=False) as data:
        params = {k: data[k] for k in data.files}
    if program.signature != sig:
        raise PackageError(f"{str(path)!r}: compiled code and manifest disagree on the signature")
    return Executable(program, params, info={"package": str(path), "manifest": manifest})

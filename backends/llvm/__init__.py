"""The LLVM CPU backend (llvmlite): kernel IR -> vectorized, multithreaded machine code."""

"""The Triton GPU backend: kernel IR -> readable Triton source -> PTX/cubin; torch launches."""

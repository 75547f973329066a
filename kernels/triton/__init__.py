"""Triton kernels and launch helpers (imported lazily: triton is optional)."""

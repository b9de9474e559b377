"""Triton kernels for the course (softmax, flash attention) and their autograd wrappers."""

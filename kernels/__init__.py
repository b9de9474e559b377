"""Twin GPT's Triton kernels (softmax, flash attention) and their autograd wrappers.

    vector_add.py add(x, y): the smallest kernel, masks and grids (chapter 07 begins here)
    softmax.py    softmax(x): a fused row-wise softmax; online_softmax(x) for rows of any length
    attention.py  flash_attention(q, k, v, causal): FlashAttention-2, forward and backward,
                  what the GPT runs with attn_impl="triton" (with or without a KV cache)
    testing.py    run a kernel in a child process, inside NaN canaries (chapter 07's tests)

Reach them through `course.runtime.import_kernels("attention")`, which also makes Triton
ready (`course.runtime.use_triton`: on a machine without a GPU, kernels run in Triton's
interpreter). Importing this package imports nothing and changes nothing; importing one of
its modules loads Triton (through `use_triton`) and defines its kernels.

The PyPI package `kernels` (Hugging Face's kernel hub) has the same import name, and pip
does not stop both from being installed: in one environment its files land in the same
site-packages/kernels/ folder, over this __init__.py (and `pip uninstall kernels` then
removes it), while beside an editable install (`pip install -e .`) the PyPI one is what
`import kernels` finds. `import_kernels` checks the `__twin_gpt__` marker below and this
folder's place beside `course/`, and names both packages in its ImportError.
"""

__twin_gpt__ = True  # marks this package as Twin GPT's; read by course.runtime.import_kernels

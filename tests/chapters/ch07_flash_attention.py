"""Chapter 07: plausible wrong answers for the kernels (vector add, fused and online softmax,
tiled attention in PyTorch and in keras.ops, the FlashAttention forward, Delta and dQ), and
the library's reference of each, which must pass the same graded test cells.

Each wrong answer is the solution cell with one mistake made in it (`tests/chapters.Mistakes`).
"""

from autograde.probe import ReferenceAnswer

from . import Mistakes

_mistake = Mistakes("07_flash_attention")


WRONG_ANSWERS = [
    # --- exercise 1: the masked vector add ---
    _mistake("add_kernel", "the store has no mask",
             ("tl.store(out_ptr + offsets, x + y, mask=inside)",
              "tl.store(out_ptr + offsets, x + y)")),
    _mistake("add_kernel", "every program works on the first block",
             ("offsets = tl.program_id(0) * BLOCK + ", "offsets = ")),
    _mistake("add_kernel", "the program id is not multiplied by BLOCK",
             ("tl.program_id(0) * BLOCK +", "tl.program_id(0) +")),
    _mistake("add_kernel", "the mask drops the last element",
             ("inside = offsets < n", "inside = offsets < n - 1")),
    # --- exercise 2: the fused row softmax ---
    _mistake("softmax_kernel", "padding lanes load 0, which adds exp(0 - max) to the sum",
             ('mask=inside, other=-float("inf"))', "mask=inside, other=0.0)")),
    _mistake("softmax_kernel", "no max subtracted: exp overflows on large logits",
             ("tl.exp(x - tl.max(x, axis=0))", "tl.exp(x)")),
    _mistake("softmax_kernel", "the column stride is ignored (a transposed input is misread)",
             ("cols * x_col_stride", "cols")),
    _mistake("softmax_kernel", "the store has no mask",
             ("y.to(y_ptr.dtype.element_ty), mask=inside)", "y.to(y_ptr.dtype.element_ty))")),
    _mistake("softmax_kernel", "the output row uses the input's row stride",
             ("y_ptr + row * y_row_stride", "y_ptr + row * x_row_stride")),
    # --- exercise 3: the online softmax ---
    _mistake("online_softmax_kernel", "the running sum is not rescaled when the max grows",
             ("row_sum * tl.exp(row_max - new_max) + ", "row_sum + ")),
    _mistake("online_softmax_kernel", "the second pass does not divide by the sum",
             ("tl.exp(x.to(tl.float32) - row_max) / row_sum",
              "tl.exp(x.to(tl.float32) - row_max)")),
    _mistake("online_softmax_kernel", "the first pass's padding lanes load 0",
             ('mask=cols < n_cols, other=-float("inf"))', "mask=cols < n_cols, other=0.0)")),
    _mistake("online_softmax_kernel", "the second pass's store has no mask",
             ("y.to(y_ptr.dtype.element_ty), mask=inside)", "y.to(y_ptr.dtype.element_ty))")),
    # --- exercise 4: tiled attention in PyTorch ---
    _mistake("tiled_attention", "the running output is not rescaled",
             ("acc = acc * rescale[..., None] + p @", "acc = acc + p @")),
    _mistake("tiled_attention", "the running sum is not rescaled",
             ("row_sum = row_sum * rescale + p.sum(dim=-1)", "row_sum = row_sum + p.sum(dim=-1)")),
    _mistake("tiled_attention", "the causal mask hides the diagonal (off by one)",
             ("cols[None, :] <= rows[:, None] + T_k - T_q",
              "cols[None, :] < rows[:, None] + T_k - T_q")),
    _mistake("tiled_attention", "the causal mask ignores the cached keys (T_k - T_q)",
             ("cols[None, :] <= rows[:, None] + T_k - T_q", "cols[None, :] <= rows[:, None]")),
    _mistake("tiled_attention", "L without the log",
             ("row_max + torch.log(row_sum)", "row_max + row_sum")),
    _mistake("tiled_attention", "no 1/sqrt(D) scale", (" / math.sqrt(D)", "")),
    _mistake("tiled_attention", "the loop stops before the diagonal tile",
             ("int(rows[-1]) + 1 + T_k - T_q", "int(rows[0]) + T_k - T_q")),
    # --- exercise 5: the forward kernel ---
    _mistake("flash_forward_kernel", "the running sum and output are not rescaled",
             ("row_sum = row_sum * rescale + ", "row_sum = row_sum + "),
             ("acc = acc * rescale[:, None] + ", "acc = acc + ")),
    _mistake("flash_forward_kernel", "no key padding mask: the last tile's padding keys are seen",
             ("visible = cols[None, :] < T_k", "visible = cols[None, :] >= 0")),
    _mistake("flash_forward_kernel", "the causal mask hides the diagonal (off by one)",
             ("(cols[None, :] <= rows[:, None] + T_k - T_q)",
              "(cols[None, :] < rows[:, None] + T_k - T_q)")),
    _mistake("flash_forward_kernel", "the causal mask ignores the cached keys (T_k - T_q)",
             ("(cols[None, :] <= rows[:, None] + T_k - T_q)", "(cols[None, :] <= rows[:, None])")),
    _mistake("flash_forward_kernel", "L without the log",
             ("row_max + tl.log(row_sum)", "row_max + row_sum")),
    _mistake("flash_forward_kernel", "q's strides ignored (assumes a contiguous q)",
             ("q_ptr += b * stride_qb + h * stride_qh", "q_ptr += bh * T_q * D"),
             ("rows[:, None] * stride_qt + dims[None, :] * stride_qd",
              "rows[:, None] * D + dims[None, :]")),
    _mistake("flash_forward_kernel", "the store of o has no mask", ("o, mask=q_inside)", "o)")),
    _mistake("flash_forward_kernel", "the loop stops before the diagonal tile",
             ("start_m + BLOCK_M + T_k - T_q", "start_m + T_k - T_q")),
    _mistake("flash_forward_kernel", "no softmax scale",
             ("dot(q, tl.trans(k), DOT_FP32) * scale", "dot(q, tl.trans(k), DOT_FP32)")),
    # --- exercise 6: Delta and dQ ---
    _mistake("flash_backward_kernels", "Delta left at 0",
             ("delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)",
              "delta = tl.zeros([BLOCK_M], tl.float32)")),
    _mistake("flash_backward_kernels", "the softmax scale missing from dS K",
             ("(dq * scale).to(", "dq.to(")),
    _mistake("flash_backward_kernels", "dQ's loop stops before the diagonal tile",
             ("start_m + BLOCK_M + T_k - T_q", "start_m + T_k - T_q")),
    _mistake("flash_backward_kernels", "P rebuilt without subtracting L",
             ("tl.exp(scores - lse[:, None])", "tl.exp(scores)")),
    _mistake("flash_backward_kernels", "dS with the sign reversed",
             ("p * (dot(do, tl.trans(v), DOT_FP32) - delta[:, None])",
              "p * (delta[:, None] - dot(do, tl.trans(v), DOT_FP32))")),
    _mistake("flash_backward_kernels", "Delta's store has no mask",
             ("tl.store(delta_ptr + bh * T_q + rows, delta, mask=rows < T_q)",
              "tl.store(delta_ptr + bh * T_q + rows, delta)")),
    # --- exercise 7: tiled attention in keras.ops ---
    _mistake("tiled_attention_keras", "the running output is not rescaled",
             ("acc = acc * rescale[..., None] + ops.matmul", "acc = acc + ops.matmul")),
    _mistake("tiled_attention_keras", "the running sum is not rescaled",
             ("row_sum = row_sum * rescale + ", "row_sum = row_sum + ")),
    _mistake("tiled_attention_keras", "the causal mask hides the diagonal (off by one)",
             ("ops.arange(start_n, stop_n)[None, :] <= rows",
              "ops.arange(start_n, stop_n)[None, :] < rows")),
    _mistake("tiled_attention_keras", "the causal mask ignores the cached keys (T_k - T_q)",
             ("ops.arange(start_m, stop_m)[:, None] + T_k - T_q",
              "ops.arange(start_m, stop_m)[:, None]")),
    _mistake("tiled_attention_keras", "L without the log",
             ("row_max + ops.log(row_sum)", "row_max + row_sum")),
    _mistake("tiled_attention_keras", "no 1/sqrt(D) scale",
             ("scores = scores / math.sqrt(D)", "scores = scores")),
]  # fmt: skip

_SOFTMAX = 'runtime.import_kernels("softmax")'
REFERENCE_ANSWERS = [
    ReferenceAnswer("add_kernel", "kernels.vector_add.add_kernel",
                    'add_kernel = runtime.import_kernels("vector_add").add_kernel'),
    ReferenceAnswer("softmax_kernel", "kernels.softmax.softmax_kernel",
                    f"softmax_kernel = {_SOFTMAX}.softmax_kernel"),
    ReferenceAnswer("online_softmax_kernel", "kernels.softmax.online_softmax_kernel",
                    f"online_softmax_kernel = {_SOFTMAX}.online_softmax_kernel"),
    ReferenceAnswer("tiled_attention", "course.torch.flash.tiled_attention",
                    "from course.torch.flash import tiled_attention"),
    ReferenceAnswer("flash_forward_kernel", "kernels.attention's forward kernel",
                    "flash_forward_kernel = attention.flash_attention_forward_kernel"),
    ReferenceAnswer("flash_backward_kernels", "the library's preprocess and dQ kernels",
                    "flash_preprocess_kernel = attention.DEFAULT_KERNELS['preprocess']\n"
                    "flash_dq_kernel = attention.DEFAULT_KERNELS['dq']"),
    ReferenceAnswer("tiled_attention_keras", "course.tf.flash.tiled_attention",
                    "from course.tf.flash import tiled_attention as tiled_attention_keras"),
]  # fmt: skip

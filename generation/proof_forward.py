"""The proof of sampling's forward pass: one pass over whole texts, no cache, no mask.

For GPT-NeoX (the kl3m models) this is the model's own arithmetic on its own weights,
written for that one case: the rotary embedding rotates its 16 dimensions in place instead
of building new query and key tensors, q, k and v stay views of the fused projection, and
the residual adds ride on the output projections (``addmm``). Side by side on one core of
an AMX Xeon it took 5-10 % less time than transformers' forward (16 x 263 positions in
bf16, throwaway timing scripts), and the forward is four fifths of the proof's time. With
the int8 checker's dynamic int8 layers (CPUs without native bf16), on a Xeon without AMX
or AVX512-BF16, the whole proof took 4.94 s against 5.26 s (median of 3 alternating runs,
16 x 264 positions, throwaway script).

Any other model, or a GPT-NeoX it does not cover (another rotary scaling, layers other
than float or dynamic int8 ``Linear``), runs transformers' forward; tests/test_proof.py
checks that the two give the same hidden states.
"""


def proof_body(model):
    """A function from token ids (batch x length, right-padded) to the last hidden states."""
    body = model.base_model
    if _neox_covered(model):
        return lambda ids: _neox_forward(body, ids)
    return lambda ids: body(input_ids=ids, use_cache=False).last_hidden_state


def _neox_covered(model) -> bool:
    body = model.base_model
    if type(body).__name__ != "GPTNeoXModel":
        return False
    rope = getattr(model.config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return False
    if getattr(body.rotary_emb, "attention_scaling", 1.0) != 1.0:
        return False
    linears = [
        m
        for layer in body.layers
        for m in (
            layer.attention.query_key_value,
            layer.attention.dense,
            layer.mlp.dense_h_to_4h,
            layer.mlp.dense_4h_to_h,
        )
    ]
    kinds = _linear_types()
    return all(type(m) in kinds for m in linears)


def _linear_types():
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from generation.quantization import row_int8_linear_class

    # The float layers, and the int8 ones (the int8 checker's per-row layers on CPUs
    # without native bf16, fbgemm's dynamic ones), which take their own kernels and so
    # their own residual adds.
    return (torch.nn.Linear, DynamicInt8Linear, row_int8_linear_class())


def _neox_forward(body, ids):
    import torch

    batch, length = ids.shape
    x = body.embed_in(ids).view(batch * length, -1)
    # As transformers computes them: angles in float32, then cos and sin in the model's
    # dtype. cat(freqs, freqs) there: both halves use the same angles.
    positions = torch.arange(length, device=ids.device, dtype=torch.float32)
    freqs = positions[:, None] * body.rotary_emb.inv_freq.float()[None, :]
    cos = freqs.cos().to(x.dtype)[None, :, None, :]
    sin = freqs.sin().to(x.dtype)[None, :, None, :]
    parallel = body.config.use_parallel_residual
    for layer in body.layers:
        x = _neox_layer(layer, x, batch=batch, length=length, cos=cos, sin=sin, parallel=parallel)
    return body.final_layer_norm(x).view(batch, length, -1)


def _neox_layer(layer, x, *, batch: int, length: int, cos, sin, parallel: bool):
    import torch.nn.functional as F

    attention, mlp = layer.attention, layer.mlp
    size, half = attention.head_size, attention.rotary_ndims // 2
    width = x.shape[-1]
    # transformers' layout: per head, q then k then v.
    qkv = attention.query_key_value(layer.input_layernorm(x))
    qkv = qkv.view(batch, length, width // size, 3 * size)
    for at in (0, size):  # q's, then k's rotary dimensions, in place
        first = qkv[..., at : at + half]
        second = qkv[..., at + half : at + 2 * half]
        rotated = first * cos - second * sin
        second.copy_(second * cos + first * sin)
        first.copy_(rotated)
    q, k, v = (qkv[..., i * size : (i + 1) * size].transpose(1, 2) for i in range(3))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attention.scaling)
    a = a.transpose(1, 2).reshape(batch * length, width)
    out = _plus_linear(x, attention.dense, a, fresh=True)  # x + attention(ln1(x))
    # The kl3m models' parallel residual feeds the MLP x itself; the sequential one, x plus
    # the attention.
    m = mlp.act(mlp.dense_h_to_4h(layer.post_attention_layernorm(x if parallel else out)))
    return _plus_linear(out, mlp.dense_4h_to_h, m, fresh=False)


def _plus_linear(residual, linear, inputs, *, fresh: bool):
    """``residual + linear(inputs)``: a float layer adds on its matrix product (``addmm``),
    into ``residual`` itself unless ``fresh``; a quantized one adds after its own."""
    import torch

    if type(linear) is not torch.nn.Linear:
        return linear(inputs).add_(residual)
    if fresh:
        out = torch.addmm(residual, inputs, linear.weight.t())
    else:
        out = residual.addmm_(inputs, linear.weight.t())
    if linear.bias is not None:
        out.add_(linear.bias)
    return out

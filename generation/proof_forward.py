"""The proof of sampling's forward pass: one pass over whole texts, no cache, no mask.

For GPT-NeoX (the kl3m models) this is the model's own arithmetic on its own weights,
written for that one case: the rotary embedding rotates its 16 dimensions in place instead
of building new query and key tensors, q, k and v stay views of the fused projection, and
the residual adds ride on the output projections (``addmm``). Side by side on one core of
an AMX Xeon it took 5-10 % less time than transformers' forward (16 x 263 positions in
bf16, throwaway timing scripts), and the forward is four fifths of the proof's time.

Any other model, or a GPT-NeoX it does not cover (another rotary scaling, quantized
layers), runs transformers' forward; tests/test_proof.py checks that the two give the same
hidden states.
"""


def proof_body(model):
    """A function from token ids (batch x length, right-padded) to the last hidden states."""
    body = model.base_model
    if _neox_covered(model):
        return _NeoxBody(body)

    def forward(ids):
        return body(input_ids=ids, use_cache=False).last_hidden_state

    return forward


def _neox_covered(model) -> bool:
    import torch

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
    return all(type(m) is torch.nn.Linear for m in linears)


class _NeoxBody:
    def __init__(self, body):
        import torch

        self.body = body
        config = body.config
        self.heads = config.num_attention_heads
        self.head_size = config.hidden_size // self.heads
        self.rotary = body.layers[0].attention.rotary_ndims
        self.parallel = config.use_parallel_residual
        # Both output biases added once, after both products (parallel residual only).
        self.out_bias = []
        with torch.no_grad():
            for layer in body.layers:
                biases = [
                    b
                    for b in (layer.attention.dense.bias, layer.mlp.dense_4h_to_h.bias)
                    if b is not None
                ]
                self.out_bias.append(torch.stack(biases).sum(0) if biases else None)

    def __call__(self, ids):
        import torch
        import torch.nn.functional as F

        body = self.body
        batch, length = ids.shape
        x = body.embed_in(ids).view(batch * length, -1)
        # As transformers computes them: angles in float32, then cos and sin in the model's
        # dtype. cat(freqs, freqs) there: both halves use the same angles.
        positions = torch.arange(length, device=ids.device, dtype=torch.float32)
        freqs = positions[:, None] * body.rotary_emb.inv_freq.float()[None, :]
        cos = freqs.cos().to(x.dtype)[None, :, None, :]
        sin = freqs.sin().to(x.dtype)[None, :, None, :]
        for layer, out_bias in zip(body.layers, self.out_bias, strict=True):
            x = self._layer(layer, x, out_bias, batch=batch, length=length, cos=cos, sin=sin)
        final = body.final_layer_norm
        x = F.layer_norm(x, x.shape[-1:], final.weight, final.bias, final.eps)
        return x.view(batch, length, -1)

    def _layer(self, layer, x, out_bias, *, batch: int, length: int, cos, sin):
        import torch
        import torch.nn.functional as F

        attention, mlp = layer.attention, layer.mlp
        ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
        width = x.shape[-1]
        heads, size, half = self.heads, self.head_size, self.rotary // 2
        h = F.layer_norm(x, (width,), ln1.weight, ln1.bias, ln1.eps)
        # transformers' layout: per head, q then k then v.
        qkv = attention.query_key_value(h).view(batch, length, heads, 3 * size)
        for at in (0, size):  # q's, then k's rotary dimensions, in place
            first = qkv[..., at : at + half]
            second = qkv[..., at + half : at + 2 * half]
            rotated = first * cos - second * sin
            second.copy_(second * cos + first * sin)
            first.copy_(rotated)
        q, k, v = (qkv[..., i * size : (i + 1) * size].transpose(1, 2) for i in range(3))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attention.scaling)
        a = a.transpose(1, 2).reshape(batch * length, width)
        dense, down = attention.dense.weight.t(), mlp.dense_4h_to_h.weight.t()

        def mlp_in(y):
            return mlp.act(
                mlp.dense_h_to_4h(F.layer_norm(y, (width,), ln2.weight, ln2.bias, ln2.eps))
            )

        if self.parallel:  # x + attention(ln1(x)) + mlp(ln2(x)), the kl3m models' way
            out = torch.addmm(x, a, dense).addmm_(mlp_in(x), down)
            return out if out_bias is None else out.add_(out_bias)
        out = torch.addmm(x, a, dense)
        if attention.dense.bias is not None:
            out.add_(attention.dense.bias)
        out = torch.addmm(out, mlp_in(out), down)
        if mlp.dense_4h_to_h.bias is not None:
            out.add_(mlp.dense_4h_to_h.bias)
        return out

"""The worker's and the proof's linear layers: int8 layers whose every output row depends
on that row alone, and bf16 layers whose weights oneDNN packs once (``bf16_linears_pack``).

PyTorch's dynamic int8 layers (``quantize_dynamic``, fbgemm) scale the activations of a
whole input tensor by one number: its largest value. In the proof of sampling's forward
pass one tensor holds every position of eight texts, and a few positions with large
activations (the first token's, typically) set the scale for all, so the rest lose most
of their precision. Genuine samples then disagreed with the checker's draw at 3-5 % of their
positions (bench/proof_binding.py). Here each row gets its own scale: the integer products
are exact, so a row's output is the same whatever else is in the tensor, and the error
against float32 is about half fbgemm's at the proof's shapes.
"""

import functools


def rows_int8_quantize(model):
    """``model`` with every ``torch.nn.Linear`` replaced by a ``RowInt8Linear`` (in place)."""
    return _linears_replace(model, row_int8_linear_class())


def _linears_replace(model, layer_class):
    import torch

    for name, child in list(model.named_children()):
        if type(child) is torch.nn.Linear:
            setattr(model, name, layer_class(child))
        else:
            _linears_replace(child, layer_class)
    return model


@functools.cache
def row_int8_linear_class():
    import torch

    class RowInt8Linear(torch.nn.Module):
        """Weights int8 per output channel, activations int8 per row, products in int32
        (``torch._int_mm``), then scaled back to float32."""

        def __init__(self, linear):
            super().__init__()
            weight = linear.weight.detach().float()
            scale = weight.abs().amax(1).clamp(min=1e-12) / 127
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer(
                "weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous()
            )
            self.register_buffer("scale", scale)
            bias = linear.bias.detach().float() if linear.bias is not None else None
            self.register_buffer("bias", bias)

        def forward(self, x):
            shape = x.shape
            rows = x.reshape(-1, shape[-1]).float()
            # _int_mm wants more than 16 rows on some builds: pad the few-row case.
            count = rows.shape[0]
            if count <= 16:
                rows = torch.cat([rows, rows.new_zeros(17 - count, rows.shape[1])])
            row_scale = rows.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
            quantized = torch.round(rows / row_scale).to(torch.int8)
            out = torch._int_mm(quantized, self.weight_t)[:count].float()
            out = out.mul_(row_scale[:count]).mul_(self.scale)
            if self.bias is not None:
                out.add_(self.bias)
            return out.view(*shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}"

    return RowInt8Linear


def rows_scaled_int8_quantize(model):
    """``model`` with every ``torch.nn.Linear`` replaced by a ``RowScaledInt8Linear`` (in
    place): the worker's int8. The output layer hands its logits on in float32, as fbgemm
    computes them, even in a bf16 model (``int8-bf16``): the sampler reads them in float32,
    and rounding rows x vocabulary to bf16 and back cost two passes over the step's largest
    tensor and made ties among the logits."""
    model = _linears_replace(model, row_scaled_int8_linear_class())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, row_scaled_int8_linear_class()):
        head.float_output = True
    return model


@functools.cache
def row_scaled_int8_linear_class():
    """fbgemm's dynamic int8 layer made independent of the batch: each row is divided by
    its largest magnitude before the layer and multiplied back after it, and one anchor
    row holding +1 and -1 is added, so the tensor's range, and so the activation scale
    fbgemm picks, is [-1, 1] whatever the batch holds. The integer products are exact, so
    a row's output is the same in any batch. Where fbgemm has the operator that takes the
    activation scale as given (``quantized.linear_with_input_q_dq_qweight_dq_output_fp32``)
    the layer passes that scale instead of the anchor row: the same outputs, bit for bit,
    without the extra row (a 65th row on 64 costs the GEMM a tile; bench/README.md,
    2026-12-06).

    Not ``RowInt8Linear``: ``torch._int_mm`` packs the weights on every call, which on an
    AMX Xeon made the 32,768-word output layer take 15.6 ms against this layer's 7.7 and
    plain dynamic int8's 7.1 (one thread, 16 rows; bench/layers.py). The proof keeps
    ``RowInt8Linear``: its arithmetic is what contributors reproduce."""
    import torch

    class RowScaledInt8Linear(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            from torch.ao.quantization import quantize_dynamic

            self.in_features, self.out_features = linear.in_features, linear.out_features
            bare = torch.nn.Linear(self.in_features, self.out_features, bias=False)
            with torch.no_grad():
                bare.weight.copy_(linear.weight.detach().float())
            self.inner = quantize_dynamic(
                torch.nn.Sequential(bare), {torch.nn.Linear}, dtype=torch.qint8
            )[0]
            # Plain attributes, not buffers: a model moved to bf16 around these layers
            # (``int8-bf16``) leaves them in float32, as fbgemm computes.
            self.bias = linear.bias.detach().float() if linear.bias is not None else None
            self.anchor = torch.zeros(1, self.in_features)
            self.anchor[0, 0], self.anchor[0, -1] = 1.0, -1.0
            # The activation scale and zero point fbgemm's dynamic layer picks for [-1, 1]
            # (torch's dynamic layer asks for 7 bits, so that AVX2's 16-bit pair sums
            # cannot saturate).
            self.input_scale, self.input_zero_point = torch._choose_qparams_per_tensor(
                self.anchor, True
            )
            self.given_scale = _given_scale_op()
            self.float_output = False

        def forward(self, x):
            shape = x.shape
            rows = x.reshape(-1, shape[-1]).float()
            scale = rows.abs().amax(1, keepdim=True).clamp(min=1e-12)
            if self.given_scale is not None:
                out = self.given_scale(
                    rows / scale,
                    self.input_scale,
                    self.input_zero_point,
                    self.inner._packed_params._packed_params,
                )
            else:
                out = self.inner(torch.cat([rows / scale, self.anchor]))[:-1]
            out.mul_(scale)
            if self.bias is not None:
                out.add_(self.bias)
            out = out.view(*shape[:-1], self.out_features)
            return out if self.float_output else out.to(x.dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}"

    return RowScaledInt8Linear


def _given_scale_op():
    import torch

    try:
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    except (AttributeError, RuntimeError):
        return None


def bf16_linears_pack(model):
    """``model`` (bf16, on the CPU) with every ``torch.nn.Linear`` replaced by a
    ``PackedBF16Linear`` (in place) where oneDNN can take packed weights, else as it was.
    ``F.linear`` in bf16 reorders the weights into oneDNN's blocked layout on every call;
    packed once, the demo generator's output layer takes 0.6 of the time at any row count
    and the same values (bench/README.md)."""
    if not bf16_packing_available():
        return model
    return _linears_replace(model, packed_bf16_linear_class())


@functools.cache
def bf16_packing_available() -> bool:
    """oneDNN's packed linear is in this torch build and computes what ``F.linear`` does."""
    import torch

    try:
        weight = torch.randn(24, 16).bfloat16()
        x = torch.randn(3, 16).bfloat16()
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 3)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return bool(torch.allclose(out.float(), (x @ weight.t()).float(), rtol=0.02))


@functools.cache
def packed_bf16_linear_class():
    import torch

    class PackedBF16Linear(torch.nn.Module):
        """A bf16 linear layer whose weights oneDNN packed once, at load."""

        # The packing's row-count hint: a decoding step's rows. Any count computes the same.
        ROWS_HINT = 64

        def __init__(self, linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach().to(torch.bfloat16)
            self.register_buffer(
                "packed", torch.ops.mkldnn._reorder_linear_weight(weight, self.ROWS_HINT)
            )
            bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
            self.register_buffer("bias", bias)

        def forward(self, x):
            shape = x.shape
            out = torch.ops.mkldnn._linear_pointwise(
                x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], ""
            )
            return out.view(*shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, packed"

    return PackedBF16Linear

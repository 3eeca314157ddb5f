"""Layers that opacus can compute per-sample gradients of, for differentially private training.

opacus swaps ``nn.GRU`` for its ``DPGRU`` (``ModuleValidator.fix``). Its ``DPMultiheadAttention`` does not
serve the Transformer (opacus 1.6): ``nn.TransformerEncoder`` and its layers turn the boolean padding mask
into a float one, which it refuses, and with ``batch_first=True`` it merges the heads' outputs in the
wrong order (its output differs from ``nn.MultiheadAttention``'s on the same weights; opacus pull
request 825 describes the same reshape). So
:func:`dp_compatible` runs each ``nn.TransformerEncoder`` as :class:`DPTransformerEncoder`: the same
layers and weights, its attention :class:`PlainAttention`, built of ``nn.Linear`` layers (whose
per-sample gradients opacus knows) and the attention arithmetic, which has no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DPTransformerEncoder", "PlainAttention", "dp_compatible"]


class PlainAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first, self-attention, a boolean key padding mask: True = padding)
    as four ``nn.Linear`` layers, with the weights of ``attention``."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        d, self.heads = attention.embed_dim, attention.num_heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))  # plain Linear: opacus knows it
        w, b = attention.in_proj_weight.detach(), attention.in_proj_bias.detach()
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(w[i * d : (i + 1) * d])
                lin.bias.copy_(b[i * d : (i + 1) * d])
            self.out.weight.copy_(attention.out_proj.weight)
            self.out.bias.copy_(attention.out_proj.bias)
        self.dropout = nn.Dropout(attention.dropout)

    def forward(self, x, key_padding_mask=None):
        n, length, d = x.shape

        def split(t):
            return t.view(n, length, self.heads, d // self.heads).transpose(1, 2)  # (n, heads, length, d_head)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(n, length, d))


class DPTransformerEncoder(nn.Module):
    """The layers of an ``nn.TransformerEncoder`` (batch first), pre- or post-norm as they were built, with
    :class:`PlainAttention` for their attention and the boolean ``src_key_padding_mask`` passed as is."""

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = encoder.layers
        for layer in self.layers:
            layer.self_attn = PlainAttention(layer.self_attn)
        self.norm = encoder.norm

    def forward(self, src, src_key_padding_mask=None):
        x = src
        for layer in self.layers:
            x = _layer(layer, x, src_key_padding_mask)
        return x if self.norm is None else self.norm(x)


def _layer(layer: nn.TransformerEncoderLayer, x, mask):
    def attend(h):
        return layer.dropout1(layer.self_attn(h, key_padding_mask=mask))

    def feed_forward(h):
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))

    if layer.norm_first:
        x = x + attend(layer.norm1(x))
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + attend(x))
    return layer.norm2(x + feed_forward(x))


def dp_compatible(net: nn.Module) -> nn.Module:
    """``net`` with every ``nn.TransformerEncoder`` run as :class:`DPTransformerEncoder`, then opacus'
    replacements (``ModuleValidator.fix``: ``nn.GRU`` -> ``DPGRU``); the weights are kept."""
    from opacus.validators import ModuleValidator

    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.TransformerEncoder):
                if not child.layers[0].self_attn.batch_first:
                    raise ValueError("dp_compatible: the Transformer encoder must be batch first")
                setattr(parent, name, DPTransformerEncoder(child))
    return ModuleValidator.fix(net)

"""Torch modules: they compute ``forward`` and nothing else (the estimator owns training)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "EventEmbedding",
    "GRUEncoder",
    "TransformerEncoder",
    "HazardHead",
    "SequenceRiskNet",
    "TreatmentResponseNet",
    "VisitEmbedding",
    "RecordRiskNet",
]


class EventEmbedding(nn.Module):
    """code embedding + value along a code-specific direction + time before prediction -> d_model.

    ``E_code[c] + v * E_value[c]``: a reading means something different for each code, so each
    code learns its own value direction (a shared value projection measured worse for T2D).
    """

    def __init__(self, n_codes: int, d_model: int):
        super().__init__()
        self.code = nn.Embedding(n_codes, d_model, padding_idx=0)
        self.value = nn.Embedding(n_codes, d_model, padding_idx=0)
        self.time = nn.Linear(1, d_model)  # log(1 + days before prediction)

    def forward(self, code, value, has_value, log_days):
        return (
            self.code(code) + (value * has_value).unsqueeze(-1) * self.value(code) + self.time(log_days.unsqueeze(-1))
        )


class GRUEncoder(nn.Module):
    """GRU over right-padded events; the state after the last real event summarises the history."""

    def __init__(self, d_model: int, n_layers: int = 1):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)

    def forward(self, x, mask, length):
        out, _ = self.gru(x)
        last = (length - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.size(-1))
        return out.gather(1, last).squeeze(1)


class TransformerEncoder(nn.Module):
    """Self-attention with a continuous-time sinusoidal embedding and a padding mask; masked mean pool."""

    def __init__(self, d_model: int, n_layers: int = 2, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.register_buffer("freq", torch.exp(torch.arange(0, d_model, 2) * (-math.log(1e4) / d_model)) * 50.0)
        self.norm = nn.LayerNorm(d_model)

    def time_embedding(self, log_days):
        angles = log_days.unsqueeze(-1) * self.freq
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def forward(self, x, mask, length, log_days):
        h = self.encoder(x + self.time_embedding(log_days), src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.norm((h * m).sum(1) / m.sum(1).clamp(min=1.0))


class HazardHead(nn.Module):
    """Discrete-time hazards per outcome and horizon bin; risk = 1 - prod(1 - hazard), monotone by construction."""

    def __init__(self, d_in: int, n_outcomes: int, n_bins: int):
        super().__init__()
        self.n_outcomes, self.n_bins = n_outcomes, n_bins
        self.linear = nn.Linear(d_in, n_outcomes * n_bins)

    def forward(self, h):
        return self.linear(h).view(-1, self.n_outcomes, self.n_bins)  # hazard logits


class SequenceRiskNet(nn.Module):
    """Embedding -> encoder (GRU or Transformer) -> concat static traits -> MLP -> hazard logits.

    With ``n_forecast`` > 0 a linear ``forecast`` head reads the same representation; the estimator
    trains it on the next readings of numeric codes (an auxiliary task) and never uses it to predict.
    """

    def __init__(
        self,
        *,
        n_codes,
        n_static,
        n_outcomes,
        n_bins,
        d_model=64,
        encoder="gru",
        n_layers=1,
        n_heads=4,
        dropout=0.0,
        n_forecast=0,
    ):
        super().__init__()
        self.kind = encoder
        self.embed = EventEmbedding(n_codes, d_model)
        # No dropout inside attention: any non-zero attention dropout sends torch to its slow math
        # path on CPU (MEASURED.md); ``dropout`` regularises the head instead.
        self.encoder = (
            GRUEncoder(d_model, n_layers)
            if encoder == "gru"
            else TransformerEncoder(d_model, n_layers, n_heads, dropout=0.0)
        )
        self.static = nn.Linear(n_static, d_model)
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Dropout(dropout))
        self.head = HazardHead(d_model, n_outcomes, n_bins)
        # Training-only auxiliary head: the next reading of ``n_forecast`` numeric codes.
        self.forecast = nn.Linear(d_model, n_forecast) if n_forecast else None

    def represent(self, code, value, has_value, log_days, mask, length, static, with_state=False):
        """The patient's representation (batch, d_model) that the heads read (and, ``with_state``,
        the encoder's output it was made from)."""
        x = self.embed(code, value, has_value, log_days)
        if self.kind == "gru":
            h = self.encoder(x, mask, length)
        else:
            h = self.encoder(x, mask, length, log_days)
        r = self.mlp(torch.cat([h, self.static(static)], dim=-1))
        return (r, h) if with_state else r

    def forward(self, code, value, has_value, log_days, mask, length, static):
        return self.head(self.represent(code, value, has_value, log_days, mask, length, static))


class TreatmentResponseNet(nn.Module):
    """A :class:`SequenceRiskNet` plus a propensity head and plan-conditioned hazard offsets.

    Hazard logits under plan ``p`` (``p = 0`` the reference) for bootstrap head ``k``:
    ``base(r) + bias[k, p] + r @ weight[k, p]`` (zero offset for the reference), i.e. each plan moves
    the log-odds of every (outcome, bin) hazard by an amount that may depend on the patient.
    Returns base logits (batch, outcomes, bins), offsets (batch, heads, plans - 1, outcomes, bins)
    and propensity logits (batch, plans).
    """

    def __init__(self, *, n_plans, n_boot, **risk_net):
        super().__init__()
        self.risk = SequenceRiskNet(**risk_net)
        d, o, b = risk_net.get("d_model", 64), risk_net["n_outcomes"], risk_net["n_bins"]
        self.n_outcomes, self.n_bins = o, b
        self.propensity = nn.Linear(d, n_plans)
        self.effect_bias = nn.Parameter(torch.zeros(n_boot, n_plans - 1, o * b))
        self.effect_weight = nn.Parameter(torch.zeros(n_boot, n_plans - 1, d, o * b))

    def forward(self, code, value, has_value, log_days, mask, length, static):
        return self.heads(self.risk.represent(code, value, has_value, log_days, mask, length, static))

    def heads(self, r):
        """Base logits, plan offsets and propensity logits from a representation ``r``."""
        base = self.risk.head(r)
        offset = torch.einsum("nd,kpdc->nkpc", r, self.effect_weight) + self.effect_bias
        return (
            base,
            offset.view(r.size(0), *self.effect_bias.shape[:2], self.n_outcomes, self.n_bins),
            self.propensity(r),
        )


class VisitEmbedding(nn.Module):
    """A visit's events -> d_model: the mean of ``E_code[c] + v * E_value[c]`` over its events, plus
    a projection of the visit's time features (gap since the previous visit, events, age)."""

    def __init__(self, n_codes: int, d_model: int, n_features: int = 3):
        super().__init__()
        self.code = nn.EmbeddingBag(n_codes, d_model, mode="sum")
        self.value = nn.EmbeddingBag(n_codes, d_model, mode="sum")
        self.time = nn.Linear(n_features, d_model)

    def forward(self, event_code, event_value, event_offsets, visit_features):
        n = torch.diff(event_offsets, append=event_offsets.new_tensor([event_code.numel()])).clamp(min=1)
        bag = self.code(event_code, event_offsets) + self.value(
            event_code, event_offsets, per_sample_weights=event_value
        )
        return bag / n.unsqueeze(-1).to(bag.dtype) + self.time(visit_features)


class RecordRiskNet(nn.Module):
    """Visits -> one causal GRU pass per subject -> the state at each row's readout visit (+ time
    since it, + static traits) -> MLP -> hazard logits; a linear ``forecast`` head as in
    :class:`SequenceRiskNet` (training only).

    Inputs are flat: the visits of a batch of ``n_subjects`` subjects sit at ``visit_slot`` of a
    ``(n_subjects, width)`` grid (right-padded; the GRU is causal, so padding after a subject's last
    visit changes none of its states); ``readout`` is each row's slot (-1: no visit yet, the initial
    state).
    """

    def __init__(
        self, *, n_codes, n_static, n_outcomes, n_bins, d_model=64, n_layers=1, dropout=0.0, n_forecast=0, n_readout=2
    ):
        super().__init__()
        self.d_model = d_model
        self.embed = VisitEmbedding(n_codes, d_model)
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)
        # log days since the readout visit, no-visit flag (+ the last readings of chosen codes)
        self.gap = nn.Linear(n_readout, d_model)
        self.static = nn.Linear(n_static, d_model)
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Dropout(dropout))
        self.head = HazardHead(d_model, n_outcomes, n_bins)
        self.forecast = nn.Linear(d_model, n_forecast) if n_forecast else None

    def represent(
        self,
        event_code,
        event_value,
        event_offsets,
        visit_slot,
        visit_features,
        n_subjects,
        width,
        readout,
        readout_features,
        static,
        with_state=False,
    ):
        v = self.embed(event_code, event_value, event_offsets, visit_features)
        grid = v.new_zeros(n_subjects * width, self.d_model).index_copy(0, visit_slot, v)
        states, _ = self.gru(grid.view(n_subjects, width, self.d_model))
        flat = states.reshape(-1, self.d_model)
        h = torch.where((readout >= 0).unsqueeze(-1), flat[readout.clamp(min=0)], flat.new_zeros(()))
        r = self.read_out(h, readout_features, static)
        return (r, h) if with_state else r

    def read_out(self, h, readout_features, static):
        """The recurrent state at each row's readout visit (zeros before any) -> the representation."""
        return self.mlp(torch.cat([h + self.gap(readout_features), self.static(static)], dim=-1))

    def advance(
        self, h0, event_code, event_value, event_offsets, visit_slot, visit_features, n_subjects, width, n_visits
    ):
        """Continue each subject's GRU from ``h0`` ``(n_layers, n_subjects, d_model)`` over its next
        ``n_visits`` (>= 1) visits; returns every layer's state after the last of them (the twin state)."""
        v = self.embed(event_code, event_value, event_offsets, visit_features)
        grid = v.new_zeros(n_subjects * width, self.d_model).index_copy(0, visit_slot, v)
        packed = nn.utils.rnn.pack_padded_sequence(
            grid.view(n_subjects, width, self.d_model), n_visits, batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed, h0)
        return h

    def forward(self, **inputs):
        return self.head(self.represent(**inputs))

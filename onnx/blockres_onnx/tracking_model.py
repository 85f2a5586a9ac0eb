"""Small models for the tracking task: ChaCAL (resolvent attention, ``dense`` or
``block``) and a compact softmax Transformer, trainable in PyTorch and exported to
ONNX with the ``tokens [B, n] → logits [B, n, K]`` interface of TRACKING.md.

Positions: no position embedding. Every head gets one extra query/key channel whose
product is ``slope_h · (j − n) / 8``: a per-head linear recency bias (ALiBi) written
into Q·Kᵀ, so the same operator (and the same ONNX node) sees it. Because the slope is
one constant per head it shifts every logit of a row alike: only distances count, and
the models run at any length. For ``block`` the coarse logits see it through the block
means (the mean key position of block J), with the same constant slope.

Example::

    import torch
    from blockres_onnx.tracking_model import ModelConfig, TrackingModel
    cfg = ModelConfig(kind="block", boxes=4, layers=2, block_size=16)
    model = TrackingModel(cfg)
    logits = model(torch.randint(0, 128, (2, 100)))   # [2, 100, 4]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import DOMAIN, OP_TYPE, OPSET_VERSION
from .torch_ops import resolvent_attention
from .tracking import VOCAB


@dataclass
class ModelConfig:
    kind: str = "block"  # "block" | "dense" (ChaCAL, the blockres op) | "softmax"
    boxes: int = 4
    layers: int = 2
    d_model: int = 128
    heads: int = 4
    mlp: int = 4
    block_size: int = 16
    coarse_query: str = "first"
    gammas: list = field(default_factory=lambda: [0.5, 0.8, 0.9, 0.95])
    learn_gamma: bool = True
    slopes: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])

    def as_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def _inv_softplus(x):
    return math.log(math.expm1(x))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, h = cfg.d_model, cfg.heads
        self.dh = d // h
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        slopes = (cfg.slopes * h)[:h]
        self.slope = nn.Parameter(torch.tensor([_inv_softplus(s) for s in slopes]))
        if cfg.kind != "softmax":
            gammas = (cfg.gammas * h)[:h]
            logit = torch.tensor([math.log(g / (1 - g)) for g in gammas])
            self.gamma_logit = nn.Parameter(logit, requires_grad=cfg.learn_gamma)
        # Export-time constants (floats on the node); None while training.
        self.frozen_gamma: list | None = None

    def gamma(self):
        return torch.sigmoid(self.gamma_logit).clamp(max=0.995)

    def freeze(self):
        """Fix γ to Python floats (ONNX attributes) before export."""
        if self.cfg.kind != "softmax":
            self.frozen_gamma = [float(g) for g in self.gamma().detach().cpu()]

    def forward(self, x, rel_pos):
        bsz, n, _ = x.shape
        h, dh = self.cfg.heads, self.dh
        q, k, v = self.qkv(x).view(bsz, n, 3, h, dh).permute(2, 0, 3, 1, 4)
        # The recency channel: q = slope·sqrt(dh + 1), k = (j − n)/8, so that
        # scale·q·k = slope·(j − n)/8 with scale = 1/sqrt(dh + 1).
        scale = 1.0 / math.sqrt(dh + 1)
        slope = nn.functional.softplus(self.slope).view(1, h, 1, 1) / scale
        q = torch.cat([q, slope.expand(bsz, h, n, 1)], dim=-1)
        k = torch.cat([k, rel_pos.view(1, 1, n, 1).expand(bsz, h, n, 1)], dim=-1)
        if self.cfg.kind == "softmax":
            y = self._softmax(q, k, v, scale)
        else:
            y = self._resolvent(q, k, v, scale)
        return self.out(y.transpose(1, 2).reshape(bsz, n, h * dh))

    def _softmax(self, q, k, v, scale):
        if torch.onnx.is_in_onnx_export() or not q.is_cuda:
            n = q.shape[-2]
            logits = (q @ k.transpose(-1, -2)) * scale
            mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
            a = torch.softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
            return a @ v
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    def _attrs(self, gamma, scale):
        attrs = {"gamma": float(gamma), "causal": 1, "scale": float(scale), "structure": self.cfg.kind}
        if self.cfg.kind == "block":
            attrs["block_size"] = int(self.cfg.block_size)
            if self.cfg.coarse_query != "mean":
                attrs["coarse_query"] = self.cfg.coarse_query
        return attrs

    def _resolvent(self, q, k, v, scale):
        if torch.onnx.is_in_onnx_export():
            if self.frozen_gamma is None:
                raise RuntimeError("call model.freeze() before export: γ must be constants on the nodes")
            outs = []
            for i, g in enumerate(self.frozen_gamma):
                qi, ki, vi = q[:, i : i + 1], k[:, i : i + 1], v[:, i : i + 1]
                outs.append(
                    torch.onnx.ops.symbolic(
                        f"{DOMAIN}::{OP_TYPE}",
                        (qi, ki, vi),
                        self._attrs(g, scale),
                        dtype=q.dtype,
                        shape=(q.shape[0], 1, q.shape[2], v.shape[3]),
                        version=OPSET_VERSION,
                    )
                )
            return torch.cat(outs, dim=1)
        gamma = torch.tensor(self.frozen_gamma, device=q.device) if self.frozen_gamma else self.gamma()
        return resolvent_attention(
            q,
            k,
            v,
            gamma,
            structure=self.cfg.kind,
            block_size=self.cfg.block_size,
            scale=scale,
            coarse_query=self.cfg.coarse_query,
        )


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.norm1 = RMSNorm(d)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp * d), nn.GELU(), nn.Linear(cfg.mlp * d, d))

    def forward(self, x, rel_pos):
        x = x + self.attn(self.norm1(x), rel_pos)
        return x + self.mlp(self.norm2(x))


class TrackingModel(nn.Module):
    """``tokens int64 [B, n] → logits float32 [B, n, K]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.kind not in ("block", "dense", "softmax"):
            raise ValueError(f"kind: expected block, dense or softmax, got {cfg.kind!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.boxes)

    def freeze(self):
        for layer in self.layers:
            layer.attn.freeze()
        return self

    def forward(self, tokens):
        n = tokens.shape[1]
        # Out-of-vocabulary ids are clamped: finite logits instead of a gather error.
        x = self.embed(tokens.clamp(0, VOCAB - 1))
        pos = torch.arange(n, device=tokens.device, dtype=x.dtype)
        rel_pos = (pos - (n - 1)) / 8.0
        for layer in self.layers:
            x = layer(x, rel_pos)
        return self.head(self.norm(x))

    def gammas(self):
        if self.cfg.kind == "softmax":
            return []
        return [[round(float(g), 4) for g in layer.attn.gamma()] for layer in self.layers]

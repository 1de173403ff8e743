"""Small transformers for GTL: the denoiser (AdaLN time conditioning, SUBS), sequence scorers (domain classifiers
and the ratio network: mean pooling, one scalar) and the planner (one logit per position).

All models take int64 token sequences ``z`` of shape ``[B, L]`` whose tokens lie in ``[0, V]``, where ``V`` is the
data vocabulary and ``mask_id = V`` is the absorbing mask token (so the embedding table has ``V + 1`` rows).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F


@dataclasses.dataclass
class TrunkConfig:
    """Transformer size. ``cond`` switches AdaLN conditioning on a scalar (the diffusion time) on."""

    vocab: int  # data tokens V; the mask token is V
    max_len: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.0
    cond: bool = False
    window: int = 0  # > 0: each position attends only to positions within this distance (local attention)
    positional: str = "relative"  # "relative": learned per-head bias per offset (T5-style); "rotary": RoPE
    edges: bool = False  # learned embeddings added at the first and the last position (see Trunk)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of float ``t`` ``[B]`` (scaled by 1000 as in DiT/MDLM) -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float().unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rotary_tables(length: int, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[length, head_dim]`` of rotary position embeddings (RoPE, as in MDLM's DiT)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = torch.arange(length, dtype=torch.float32).unsqueeze(1) * inv
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[..., L, head_dim]`` by position: attention scores then depend on relative offsets, which is
    what a sequence model of local structure (a Markov chain, text) needs to learn quickly."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    """Pre-LN transformer block; with conditioning, DiT-style AdaLN modulation (shift, scale, gate) of both halves.

    The modulation layer starts at zero and the gates at one, so a conditioned block begins as a plain pre-LN block
    and learns how much the time should matter (for absorbing diffusion the Bayes-optimal denoiser does not depend on
    ``t`` at all given ``z_t``, so a model that may ignore it loses nothing).
    """

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.rel = None
        if cfg.positional == "relative":
            self.rel = nn.Parameter(torch.zeros(cfg.n_heads, 2 * cfg.max_len - 1))
        elif cfg.positional != "rotary":
            raise ValueError(f"positional must be 'relative' or 'rotary', got {cfg.positional!r}")
        self.ln1 = nn.LayerNorm(d, elementwise_affine=not cfg.cond)
        self.ln2 = nn.LayerNorm(d, elementwise_affine=not cfg.cond)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.ada = None
        if cfg.cond:
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def _attn(self, h: torch.Tensor, pos) -> torch.Tensor:
        """Bidirectional attention. ``pos``: rotary ``(cos, sin)`` tables or, for relative positions, the offset
        index matrix ``[L, L]``; plus an optional boolean window mask."""
        b, n, d = h.shape
        q, k, v = self.qkv(h).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        tables, window = pos
        if self.rel is None:
            q, k = apply_rotary(q, *tables), apply_rotary(k, *tables)
            mask = window
        else:  # one additive [H, L, L] bias shared by the batch: cheaper than rotating q and k
            mask = self.rel[:, tables]
            if window is not None:
                mask = mask.masked_fill(~window, -math.inf)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, pos) -> torch.Tensor:
        if self.ada is None:
            x = x + self.drop(self._attn(self.ln1(x), pos))
            return x + self.drop(self.mlp(self.ln2(x)))
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + (1 + g1) * self.drop(self._attn(self.ln1(x) * (1 + sc1) + sh1, pos))
        return x + (1 + g2) * self.drop(self.mlp(self.ln2(x) * (1 + sc2) + sh2))

    def at_queries(self, inputs: torch.Tensor, w: int, koff, qoff, kpos, kvalid, qvalid, rope, max_len: int):
        """The block (unconditioned) at the query positions only: the middle ``nq`` of the ``nk`` inputs
        ``[M, K, nk, d]`` (offsets ``qoff`` and ``koff`` around each row's position; absolute positions ``kpos``
        ``[M, nk]``), each attending to the inputs within ``w`` of it that lie in the sequence -> ``[M, K, nq, d]``.
        A query outside the sequence attends to its whole window, so that its (unused) output stays finite.
        ``rope``: the trunk's rotary ``(cos, sin)`` tables; ``max_len`` indexes the relative-position bias."""
        if self.ada is not None:
            raise ValueError("at_queries: only for blocks without time conditioning")
        m, k, nk, d = inputs.shape
        nq = qoff.numel()
        qkv = self.qkv(self.ln1(inputs)).view(m, k, nk, 3, self.n_heads, d // self.n_heads)
        q, kk, v = qkv.permute(3, 0, 1, 4, 2, 5)
        q = q[..., w:w + nq, :]  # [M, K, H, nq, hd]
        in_window = (qoff.unsqueeze(1) - koff.unsqueeze(0)).abs() <= w  # [nq, nk]
        allowed = in_window & (kvalid.unsqueeze(1) | ~qvalid.unsqueeze(2))  # [M, nq, nk]
        allowed = allowed.view(m, 1, 1, nq, nk)
        if self.rel is None:
            cos_k, sin_k = (t[kpos.clamp(0, t.shape[0] - 1)].view(m, 1, 1, nk, -1) for t in rope)
            q = apply_rotary(q, cos_k[..., w:w + nq, :], sin_k[..., w:w + nq, :])
            kk = apply_rotary(kk, cos_k, sin_k)
            mask = allowed
        else:
            rel = (qoff.unsqueeze(1) - koff.unsqueeze(0) + max_len - 1).clamp(0, self.rel.shape[1] - 1)
            mask = self.rel[:, rel].masked_fill(~allowed, -math.inf)  # [M, 1, H, nq, nk]
        out = F.scaled_dot_product_attention(q, kk, v, attn_mask=mask)  # [M, K, H, nq, hd]
        x = inputs[:, :, w:w + nq] + self.drop(self.proj(out.transpose(2, 3).reshape(m, k, nq, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class Trunk(nn.Module):
    """Token embedding, ``n_layers`` blocks with rotary attention, final norm: ``[B, L]`` int64 -> ``[B, L, d]``.

    Positions enter only as relative offsets: a learned per-head attention bias per offset (default), or rotary
    embeddings as in MDLM's DiT. Relative positions suit local structure (a Markov chain, text), and the bias form
    costs one ``[H, L, L]`` table per layer instead of rotating every query and key.

    With ``cfg.edges`` two learned vectors (starting at zero) are added to the token embeddings at the first and the
    last position. A translation-invariant local network cannot otherwise tell the first position from any other,
    yet a sequence's log-ratio has a term of its own there (a chain's initial distribution, a token that the target
    has only at the start)."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab + 1, cfg.d_model)
        cos, sin = rotary_tables(cfg.max_len, cfg.d_model // cfg.n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, elementwise_affine=not cfg.cond)
        self.t_mlp = None
        if cfg.cond:
            self.t_mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))
            self.ada_f = nn.Linear(cfg.d_model, 2 * cfg.d_model)
            nn.init.zeros_(self.ada_f.weight)
            nn.init.zeros_(self.ada_f.bias)
        self.edge = nn.Parameter(torch.zeros(2, cfg.d_model)) if cfg.edges else None

    def edge_at(self, pos: torch.Tensor, length: int) -> torch.Tensor | None:
        """The edge embeddings at int64 positions ``pos`` ``[...]`` of a length-``length`` sequence: ``[..., d]``
        (zero inside the sequence), or ``None`` without ``cfg.edges``."""
        if self.edge is None:
            return None
        first, last = (pos == 0).unsqueeze(-1), (pos == length - 1).unsqueeze(-1)
        return first * self.edge[0] + last * self.edge[1]

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``z`` int64 ``[B, L]``, with the edge embeddings: ``[B, L, d]``."""
        x = self.tok(z)
        edges = self.edge_at(torch.arange(z.shape[1], device=z.device), z.shape[1])
        return x if edges is None else x + edges

    def forward(self, z: torch.Tensor, t: torch.Tensor | None = None, *, keep: list | None = None) -> torch.Tensor:
        """``z`` int64 ``[B, L]`` (and ``t`` float ``[B]`` when conditioned) -> ``[B, L, d]``. ``keep``: a list
        that receives each block's input and the last block's output (``n_layers + 1`` tensors ``[B, L, d]``)."""
        if z.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {z.shape[1]} exceeds max_len {self.cfg.max_len}")
        x = self.embed(z)
        n = z.shape[1]
        idx = torch.arange(n, device=z.device)
        offsets = idx[:, None] - idx[None, :]
        window = offsets.abs() <= self.cfg.window if self.cfg.window > 0 else None
        if self.cfg.positional == "rotary":
            pos = ((self.rope_cos[:n], self.rope_sin[:n]), window)
        else:
            pos = (offsets + self.cfg.max_len - 1, window)
        c = None
        if self.t_mlp is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t (float [B])")
            c = F.silu(self.t_mlp(timestep_embedding(t.to(x.device), self.cfg.d_model)))
        for blk in self.blocks:
            if keep is not None:
                keep.append(x)
            x = blk(x, c, pos)
        if keep is not None:
            keep.append(x)
        x = self.ln_f(x)
        if c is not None:
            shift, scale = self.ada_f(c).unsqueeze(1).chunk(2, dim=-1)
            x = x * (1 + scale) + shift
        return x


class Denoiser(nn.Module):
    """``x_theta(z_t, t)``: log-probabilities of the clean token at every position, fp32 ``[B, L, V + 1]``.

    SUBS parameterization (MDLM): the mask column is ``-inf`` everywhere (the clean data never holds a mask), and an
    unmasked position is copied: its row is ``0`` at its own token and ``-inf`` elsewhere.
    """

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        cfg = dataclasses.replace(cfg, cond=True)
        self.cfg = cfg
        self.mask_id = cfg.vocab
        self.trunk = Trunk(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab + 1)

    def scores(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unnormalized log-probabilities, fp32 ``[B, L, V + 1]``: the head's logits with the mask column ``-inf``.

        At a masked position ``log_softmax`` of a row is :meth:`forward`'s row; unmasked rows are left as they are.
        The samplers call this, so that only the rows a step uses are normalized (inside the kernels).
        """
        logits = self.head(self.trunk(z, t)).float()
        logits[..., self.mask_id] = -math.inf
        return logits

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z`` int64 ``[B, L]``, ``t`` float ``[B]`` -> fp32 log-probabilities ``[B, L, V + 1]``."""
        logp = torch.log_softmax(self.scores(z, t), dim=-1)
        copied = torch.full_like(logp, -math.inf).scatter_(-1, z.unsqueeze(-1), 0.0)
        return torch.where((z != self.mask_id).unsqueeze(-1), copied, logp)


class _ScalarHead(nn.Module):
    """A trunk without time conditioning and a linear head to one value per position (the two scorers below)."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        cfg = dataclasses.replace(cfg, cond=False)
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.head = nn.Linear(cfg.d_model, 1)


class SequenceScorer(_ScalarHead):
    """A scalar per sequence (mean pooling over positions, then a linear head): fp32 ``[B]``.

    Used for the clean domain classifier, the noise-aware domain classifier and the ratio network; the output is a
    log-ratio ``log q/p`` (positive = target-like). No time input: under absorbing noise the noise level is visible
    in ``z`` (its masks), and the exact ratio ``q_t(z)/p_t(z) = q(z_obs)/p(z_obs)`` depends on ``z`` alone.
    """

    def __init__(self, cfg: TrunkConfig):
        super().__init__(cfg)
        # A sequence's log-ratio is a sum over its tokens, so one token moves it by O(1) nats while moving the mean
        # of the features by O(1/L): the head output is scaled by a learned factor that starts at L, and the head
        # starts at zero (an untrained scorer guides nothing). Without the factor, Adam needs ~L times more steps
        # to grow the head to the size the log-ratio needs.
        self.log_scale = nn.Parameter(torch.tensor(math.log(self.cfg.max_len)))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` int64 ``[B, L]`` -> fp32 ``[B]``."""
        return self._score(self.trunk(z).mean(dim=1))

    def _score(self, pooled: torch.Tensor) -> torch.Tensor:
        return (self.log_scale.exp() * self.head(pooled)).squeeze(-1).float()

    @property
    def score_substitutions(self):
        """``score_substitutions(z, seq, pos, cand)`` (``RatioScorer``'s substitution-aware protocol) when the
        trunk's attention is local, else ``None``: callers then build the substituted sequences themselves, in
        chunks. Also ``None`` in training mode with dropout, whose masks would differ from a whole-sequence pass."""
        if self.cfg.window <= 0 or (self.training and self.cfg.dropout > 0):
            return None
        return self._score_substitutions_locally

    def _score_substitutions_locally(self, z: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor,
                                     cand: torch.Tensor, *, reach: int | None = None) -> torch.Tensor:
        """The scores of ``z[seq[m]]`` with position ``pos[m]`` set to ``cand[m, k]``: fp32 ``[M, K]``, the same
        function as :meth:`forward` on each substituted sequence, differentiable.

        ``z`` int64 ``[B, L]``; ``seq``, ``pos`` int64 ``[M]``; ``cand`` int64 ``[M, K]``. With local attention
        (window w > 0) a substitution at ``pos`` changes the output of block ``l`` (from 1) at positions within
        ``l * w`` of ``pos`` only; everything else is the unsubstituted sequence's. So the trunk runs once on each
        sequence of ``z``, keeping every block's input, and per candidate each block computes only its changed
        positions, attending to the changed inputs and to the kept ones of the neighbours within ``w``. The pooled
        features are the sequence's sum with the changed final positions replaced. For the ratio network of
        ``gtl-markov`` (w = 1, 2 blocks, L = 20) a candidate costs the blocks of 3 + 5 positions (attending to 5 + 7
        inputs) instead of 2 x 20 for its whole sequence. ``reach``
        (default w) is how far the changed region grows per block; only the tests set it, to show that a region
        that grows too slowly is caught.
        """
        m, k = cand.shape
        length = z.shape[1]
        w, grow = self.cfg.window, self.cfg.window if reach is None else reach
        trunk, dev = self.trunk, z.device
        kept_inputs: list = []
        feats = trunk(z, keep=kept_inputs)  # [B, L, d]
        d = feats.shape[-1]
        x = trunk.tok(cand)  # [M, K, d]: block 0's changed input, the candidate at pos
        edges = trunk.edge_at(pos, length)
        x = (x if edges is None else x + edges.unsqueeze(1)).unsqueeze(2)  # [M, K, 1, d]
        c = 0  # x covers offsets [-c, c] around pos
        for i, blk in enumerate(trunk.blocks):
            c_out, span = c + grow, c + grow + w  # the block's changed outputs, and the inputs they attend to
            koff = torch.arange(-span, span + 1, device=dev)
            qoff = koff[w:-w]  # [-c_out, c_out]
            kpos, qpos = pos.unsqueeze(1) + koff, pos.unsqueeze(1) + qoff  # [M, nk], [M, nq]
            kvalid, qvalid = (kpos >= 0) & (kpos < length), (qpos >= 0) & (qpos < length)
            base = kept_inputs[i][seq.unsqueeze(1), kpos.clamp(0, length - 1)].unsqueeze(1)  # [M, 1, nk, d]
            side = span - c
            inputs = torch.cat([base[:, :, :side].expand(m, k, side, d), x,
                                base[:, :, side + 2 * c + 1:].expand(m, k, side, d)], 2)  # [M, K, nk, d]
            x = blk.at_queries(inputs, w, koff, qoff, kpos, kvalid, qvalid,
                               (trunk.rope_cos, trunk.rope_sin), self.cfg.max_len)
            c = c_out
        final = trunk.ln_f(x)  # [M, K, 2c + 1, d]
        changed = pos.unsqueeze(1) + torch.arange(-c, c + 1, device=dev)  # [M, 2c + 1]
        inside = ((changed >= 0) & (changed < length)).to(feats.dtype)
        kept = feats.sum(1)[seq] - (feats[seq.unsqueeze(1), changed.clamp(0, length - 1)]
                                    * inside.unsqueeze(-1)).sum(1)  # [M, d]
        changed_sum = (final * inside.view(m, 1, -1, 1)).sum(2)  # [M, K, d]
        return self._score((kept.unsqueeze(1) + changed_sum) / length)

class Planner(_ScalarHead):
    """Position scores: fp32 ``[B, L]``, the logit that the frozen denoiser's argmax is right at each position."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` int64 ``[B, L]`` -> fp32 ``[B, L]``."""
        return self.head(self.trunk(z)).squeeze(-1).float()


class ScorerEnsemble(nn.Module):
    """The mean score of several scorers (e.g. ratio networks trained from different initializations, or on
    bootstrap resamples of a small target set): ``z`` int64 ``[B, L]`` -> fp32 ``[B]``. Substitution-aware
    (``score_substitutions``, ``RatioScorer``'s protocol) when every member is."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(z) for m in self.members]).mean(0)

    @property
    def score_substitutions(self):
        fns = [getattr(m, "score_substitutions", None) for m in self.members]
        if any(f is None for f in fns):
            return None
        return lambda z, seq, pos, cand: torch.stack([f(z, seq, pos, cand) for f in fns]).mean(0)


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

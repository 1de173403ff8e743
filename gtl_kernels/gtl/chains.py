"""First-order Markov chains: data, transition-matrix metrics, and closed-form oracles for GTL.

For a Markov chain the two objects GTL learns are computable exactly, which gives the samplers a ground truth:

* the exact source denoiser ``p(x_l | z_obs)`` of every masked position (forward-backward with masked positions
  summed out), in the SUBS format of :class:`~gtl_kernels.gtl.nets.Denoiser`;
* the exact noisy density ratio. Masking is independent of the data, so ``q_t(z) / p_t(z) = q(z_obs) / p(z_obs)``,
  the ratio of the marginal likelihoods of the unmasked tokens (forward algorithm), which is also
  ``E_{p(x0 | z)}[q(x0) / p(x0)]``, the Doob h-transform that turns the source reverse process into the target's.

Tokens are states ``0..S-1``; the mask token is ``S``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch


@dataclasses.dataclass
class MarkovChain:
    """A chain with initial distribution ``init`` (float64 ``[S]``) and transition matrix ``trans`` (``[S, S]``,
    rows sum to 1; ``trans[a, b] = P(next = b | current = a)``)."""

    init: torch.Tensor
    trans: torch.Tensor

    def __post_init__(self):
        self.init = torch.as_tensor(self.init, dtype=torch.float64)
        self.trans = torch.as_tensor(self.trans, dtype=torch.float64)
        s = self.trans.shape[0]
        if self.trans.shape != (s, s) or self.init.shape != (s,):
            raise ValueError(f"trans must be [S, S] and init [S]; got {tuple(self.trans.shape)}, {tuple(self.init.shape)}")
        if (self.trans < 0).any() or not torch.allclose(self.trans.sum(1), torch.ones(s, dtype=torch.float64), atol=1e-6):
            raise ValueError("trans must be non-negative with rows summing to 1")
        if (self.init < 0).any() or abs(float(self.init.sum()) - 1) > 1e-6:
            raise ValueError("init must be a probability vector")

    @property
    def n_states(self) -> int:
        return self.trans.shape[0]

    @classmethod
    def sticky(cls, n_states: int, diag: float, init=None) -> "MarkovChain":
        """``diag`` on the diagonal, the rest spread evenly; uniform initial state unless ``init`` is given."""
        off = (1.0 - diag) / (n_states - 1)
        trans = torch.full((n_states, n_states), off, dtype=torch.float64)
        trans.fill_diagonal_(diag)
        init = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64) if init is None else init
        return cls(init, trans)

    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` sequences of ``length`` states: int64 ``[n, length]``."""
        x = torch.empty(n, length, dtype=torch.int64)
        x[:, 0] = torch.multinomial(self.init.expand(n, -1), 1, generator=generator).squeeze(1)
        for l in range(1, length):
            x[:, l] = torch.multinomial(self.trans[x[:, l - 1]], 1, generator=generator).squeeze(1)
        return x

    def pad_states(self, n_states: int) -> "MarkovChain":
        """The same chain on a larger state space; the added states are never visited."""
        s = self.n_states
        trans = torch.eye(n_states, dtype=torch.float64)
        trans[:s, :s] = self.trans
        init = torch.zeros(n_states, dtype=torch.float64)
        init[:s] = self.init
        return MarkovChain(init, trans)


def load_matrix(path: str | Path, n_states: int | None = None) -> torch.Tensor:
    """A transition matrix (float64 ``[S, S]``) from ``.npy``, ``.json`` (a list of rows, or ``{"trans": ...}``) or
    whitespace/comma separated text.

    Raises ``ValueError`` naming the file (and the row, where one is at fault) unless the matrix is square, finite,
    non-negative, every row sums to 1 within 1e-6, and (when ``n_states`` is given) it has ``n_states`` rows."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            m = np.load(path)
        elif path.suffix == ".json":
            obj = json.loads(path.read_text())
            m = obj["trans"] if isinstance(obj, dict) else obj
        else:
            m = np.loadtxt(path, delimiter="," if "," in path.read_text() else None, ndmin=2)
        m = np.asarray(m, dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot read a matrix ({e})") from e
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{path}: expected a square matrix, got shape {tuple(m.shape)}")
    if n_states is not None and m.shape[0] != n_states:
        raise ValueError(f"{path}: a {m.shape[0]}-state matrix, but --states is {n_states}")
    for i, row in enumerate(m):
        if not np.isfinite(row).all():
            raise ValueError(f"{path}: row {i} has a non-finite entry: {row.tolist()}")
        if (row < 0).any():
            raise ValueError(f"{path}: row {i} has a negative entry: {row.tolist()}")
        if abs(row.sum() - 1) > 1e-6:
            raise ValueError(f"{path}: row {i} sums to {row.sum():.9g}, not 1 (within 1e-6): {row.tolist()}")
    return torch.as_tensor(m)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


def transition_counts(x: torch.Tensor, n_states: int, lag: int = 1) -> torch.Tensor:
    """Counts of pairs ``(x[:, l], x[:, l + lag])``: float64 ``[S, S]``. ``x`` int64 ``[N, L]``."""
    a, b = x[:, :-lag].reshape(-1), x[:, lag:].reshape(-1)
    counts = torch.zeros(n_states * n_states, dtype=torch.float64)
    counts.index_add_(0, a * n_states + b, torch.ones_like(a, dtype=torch.float64))
    return counts.view(n_states, n_states)


def estimate_transitions(x: torch.Tensor, n_states: int, lag: int = 1) -> torch.Tensor:
    """Row-normalized transition counts, float64 ``[S, S]`` (``lag`` steps ahead; compare with ``trans ** lag``);
    a state never left gets a NaN row."""
    c = transition_counts(x, n_states, lag)
    return c / c.sum(1, keepdim=True)


def _pooled_chi2(observed: torch.Tensor, probs: torch.Tensor, min_expected: float) -> tuple[float, int]:
    """Pearson's statistic of counts ``observed`` against ``probs`` (both float64 ``[k]``, ``probs`` > 0) and its
    degrees of freedom, the cells expected below ``min_expected`` pooled into one (the chi-square law needs them
    large)."""
    expected = observed.sum() * probs
    small = expected < min_expected
    o = torch.cat([observed[~small], observed[small].sum().view(1)]) if small.any() else observed
    e = torch.cat([expected[~small], expected[small].sum().view(1)]) if small.any() else expected
    return float(((o - e).square() / e).sum()), o.numel() - 1


def fit_test(chain: MarkovChain, x: torch.Tensor, min_expected: float = 5.0) -> dict:
    """Are sequences ``x`` (int64 ``[N, L]``) draws from ``chain``? Pearson's chi-square over the first tokens
    against ``chain.init`` and, per visited state, its transition counts against its row of ``chain.trans``
    (Anderson and Goodman's test for Markov chains: given the visits, each row's counts are multinomial), cells
    expected below ``min_expected`` pooled within their row. ``{"chi2", "df", "pvalue"}``; a first token or a
    transition of probability 0 gives ``pvalue`` 0. Under the null the p-value is uniform, so a test at level
    ``alpha`` fails an exact sampler with probability ``alpha``."""
    s = chain.n_states
    first = torch.bincount(x[:, 0], minlength=s).double()
    counts = transition_counts(x, s)
    if (first[chain.init == 0] > 0).any() or (counts[chain.trans == 0] > 0).any():
        return {"chi2": math.inf, "df": 0, "pvalue": 0.0}
    parts = [(first[chain.init > 0], chain.init[chain.init > 0])]
    parts += [(counts[i][chain.trans[i] > 0], chain.trans[i][chain.trans[i] > 0])
              for i in range(s) if counts[i].sum() > 0]
    chi2 = df = 0
    for observed, probs in parts:
        c, d = _pooled_chi2(observed, probs, min_expected)
        chi2, df = chi2 + c, df + d
    # the chi-square survival function: Q(df / 2, chi2 / 2), the regularized upper incomplete gamma
    pvalue = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                           torch.tensor(chi2 / 2, dtype=torch.float64))) if df > 0 else 1.0
    return {"chi2": chi2, "df": df, "pvalue": pvalue}


def log_likelihood(chain: MarkovChain, x: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Exact log-likelihood of each sequence of ``x`` (int64 ``[N, L]``) under ``chain``: float64 ``[N]``.
    Probabilities below ``floor`` count as ``floor`` (0: an impossible sequence gets ``-inf``)."""
    ll = chain.init[x[:, 0]].clamp(min=floor).log()
    return ll + chain.trans[x[:, :-1], x[:, 1:]].clamp(min=floor).log().sum(1)


def transition_metrics(est: torch.Tensor, true: torch.Tensor, kl_floor: float = 1e-6) -> dict:
    """Mean diagonal, mean/max absolute error over all entries and the row-averaged ``KL(true || est)``.

    ``est`` entries are floored at ``kl_floor`` for the KL (a zero estimate of a non-zero entry would make it
    infinite); NaN rows (unvisited states) count as uniform rows.
    """
    s = true.shape[0]
    est = torch.where(est.isnan(), torch.full_like(est, 1.0 / s), est)
    err = (est - true).abs()
    e = est.clamp(min=kl_floor)
    e = e / e.sum(1, keepdim=True)
    kl = torch.where(true > 0, true * (true / e).log(), torch.zeros_like(true)).sum(1)
    return {
        "mean_diag": float(est.diagonal().mean()),
        "mae": float(err.mean()),
        "max_err": float(err.max()),
        "row_kl": float(kl.mean()),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------------------------------


def _emissions(z: torch.Tensor, n_states: int) -> torch.Tensor:
    """``e[b, l, s] = 1`` if position ``l`` is masked or holds ``s``: float64 ``[B, L, S]``."""
    masked = (z == n_states).unsqueeze(-1)
    onehot = torch.nn.functional.one_hot(z.clamp(max=n_states - 1), n_states).bool()
    return (masked | onehot).double()


def _forward(chain: MarkovChain, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled forward messages ``alpha`` ``[B, L, S]`` (each row sums to 1, or 0 if impossible) and
    ``log P(z_obs)`` ``[B]`` (``-inf`` when the observed tokens are impossible under the chain)."""
    bsz, length, _ = e.shape
    alphas, log_z = [], torch.zeros(bsz, dtype=torch.float64)
    a = chain.init * e[:, 0]
    for l in range(length):
        if l:
            a = (a @ chain.trans) * e[:, l]
        norm = a.sum(-1, keepdim=True)
        log_z = log_z + norm.squeeze(-1).log()
        a = torch.where(norm > 0, a / norm.clamp(min=1e-300), torch.zeros_like(a))
        alphas.append(a)
    return torch.stack(alphas, 1), log_z


def _backward(chain: MarkovChain, e: torch.Tensor) -> torch.Tensor:
    """Scaled backward messages ``beta`` ``[B, L, S]`` (only ratios within a row matter)."""
    bsz, length, s = e.shape
    b = torch.ones(bsz, s, dtype=torch.float64)
    betas = [b]
    for l in range(length - 2, -1, -1):
        b = (e[:, l + 1] * b) @ chain.trans.T
        b = b / b.sum(-1, keepdim=True).clamp(min=1e-300)
        betas.append(b)
    return torch.stack(betas[::-1], 1)


class MarkovOracleDenoiser:
    """The exact denoiser of a chain: ``(z [B, L] int64, t [B]) -> fp32 log-probabilities [B, L, S + 1]`` in the
    SUBS format (mask column ``-inf``; unmasked positions copied). ``t`` is ignored: under absorbing noise the
    posterior of the clean sequence given ``z`` does not depend on the time. Counts its calls like a network."""

    def __init__(self, chain: MarkovChain):
        self.chain = chain
        self.mask_id = chain.n_states

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        s = self.chain.n_states
        e = _emissions(z, s)
        alpha, _ = _forward(self.chain, e)
        post = alpha * _backward(self.chain, e)
        logp = (post / post.sum(-1, keepdim=True)).log()
        logp = torch.cat([logp, torch.full_like(logp[..., :1], -math.inf)], -1)
        copied = torch.full_like(logp, -math.inf).scatter_(-1, z.unsqueeze(-1), 0.0)
        return torch.where((z != s).unsqueeze(-1), copied, logp).float()


class MarkovOracleRatio:
    """The exact noisy log-ratio ``log q(z_obs) - log p(z_obs)`` between a target and a source chain:
    ``z [B, L] int64 -> float64 [B]`` (``+inf`` where only the target can produce ``z_obs``)."""

    def __init__(self, source: MarkovChain, target: MarkovChain):
        if source.n_states != target.n_states:
            raise ValueError("source and target need the same number of states (use MarkovChain.pad_states)")
        self.source, self.target = source, target

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        e = _emissions(z, self.source.n_states)
        return _forward(self.target, e)[1] - _forward(self.source, e)[1]


@torch.no_grad()
def ratio_quality(ratio, source: MarkovChain, target: MarkovChain, data: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> dict:
    """How well a learned ratio guides, measured against the oracles on noised ``data`` (int64 ``[N, L]``, usually
    held-out target sequences, the states the guided sampler visits).

    Each sequence is masked at a uniform time, one masked position is chosen, and all ``S`` one-token substitutions
    are scored by ``ratio`` and by the exact ratio. Returns the least-squares slope of the learned against the exact
    candidate log-ratios (both centred per row; 1 is ideal, below 1 means too weak guidance), their R^2, and the mean
    total-variation distance between the guided conditional ``p(v | z) r(z[l<-v])`` (exact source denoiser, learned
    ratio) and the exact target conditional.
    """
    s = source.n_states
    n, length = data.shape
    t = torch.rand(n, generator=generator)
    z = torch.where(torch.rand(n, length, generator=generator) < t[:, None], torch.full_like(data, s), data)
    pos = torch.randint(0, length, (n,), generator=generator)
    z[torch.arange(n), pos] = s  # at least the chosen position is masked
    cand = torch.arange(s).expand(n, s)
    subs = z.unsqueeze(1).repeat(1, s, 1)
    subs[torch.arange(n)[:, None], torch.arange(s)[None, :], pos[:, None]] = cand
    learned = ratio(subs.view(-1, length)).double().view(n, s)
    exact = MarkovOracleRatio(source, target)(subs.view(-1, length)).view(n, s)
    lc, ec = learned - learned.mean(1, keepdim=True), exact - exact.mean(1, keepdim=True)
    slope = float((lc * ec).sum() / (ec * ec).sum())
    r2 = float(1 - ((lc - slope * ec) ** 2).sum() / (lc * lc).sum().clamp(min=1e-12))
    logp = MarkovOracleDenoiser(source)(z).double()[torch.arange(n), pos, :s]
    guided = torch.softmax(logp + learned, -1)
    truth = torch.softmax(logp + exact, -1)
    return {"slope": slope, "r2": r2, "tv": float(0.5 * (guided - truth).abs().sum(1).mean())}

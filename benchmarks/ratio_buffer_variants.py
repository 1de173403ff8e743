"""How to build the candidate sequences a whole-sequence ratio model scores (docs/PERF.md, the GTL step's goal).

    python benchmarks/ratio_buffer_variants.py

``RatioScorer`` writes ``M * n_ratio`` one-token substitutions of ``L``-token sequences into one reused buffer of
``chunk`` rows, ``chunk`` per model call. The ways measured, timed on the same inputs in one run (M = 1024, L = 512,
chunk 1024, a cheap stub model whose own time is included), results checked equal first:

- ``whole_rows``: every row of every chunk gathered whole from ``z``, then its token written (``RatioScorer`` until
  2026-12-03);
- ``indices_once``: the same, with the rows' sequence ids and substituted cells computed once for all chunks;
- ``restore``: a buffer row keeps its sequence, and only the previous call's substituted token is put back
  (two tokens written per row instead of ``L``), with all cells planned at once (memory: three int64 per candidate);
- ``ratio_scorer``: ``RatioScorer`` now: the candidates laid out so that a buffer row keeps its sequence and its
  substituted position from one call to the next (candidate ``i`` at row ``i // C`` of call ``i % C``, ``C`` calls):
  one token written per row and call, the old position's token put back only where a row passes to the next masked
  position; a row rebuilt whole when the model wrote into its input (seen in the buffer's version counter). Until
  2026-12-04 it was ``restore`` with the cells planned for blocks of chunks.
"""

import time

import torch

from gtl_kernels.gtl.samplers import RatioScorer, SamplerStats


def ratio_scorer(z, seq, pos, cand, chunk, model):
    return RatioScorer(model, chunk, SamplerStats())(z, seq, pos, cand)


def whole_rows(z, seq, pos, cand, chunk, model):
    k, (total, length) = cand.shape[1], (cand.numel(), z.shape[1])
    width = min(chunk, total)
    buf = torch.empty(width, length, dtype=z.dtype)
    lanes, flat, out = torch.arange(width), cand.reshape(-1), torch.empty(total)
    for i in range(0, total, width):
        n = min(width, total - i)
        r = (lanes[:n] + i) // k
        seqs = torch.index_select(z, 0, seq[r], out=buf[:n])
        seqs.view(-1)[lanes[:n] * length + pos[r]] = flat[i : i + n]
        out[i : i + n] = model(seqs)
    return out.view(cand.shape)


def _plan(z, seq, pos, cand, span):
    """Per candidate: its sequence, its cell in a buffer of ``span`` rows, the token it replaces."""
    k, length = cand.shape[1], z.shape[1]
    total = cand.numel()
    r = torch.arange(total) // k
    s, p = seq[r], pos[r]
    return s, (torch.arange(total) % span) * length + p, z.reshape(-1)[s * length + p]


def indices_once(z, seq, pos, cand, chunk, model):
    total, length = cand.numel(), z.shape[1]
    width = min(chunk, total)
    buf = torch.empty(width, length, dtype=z.dtype)
    s, cells, _ = _plan(z, seq, pos, cand, width)
    flat, out = cand.reshape(-1), torch.empty(total)
    for i in range(0, total, width):
        n = min(width, total - i)
        torch.index_select(z, 0, s[i : i + n], out=buf[:n])
        buf.view(-1).index_put_((cells[i : i + n],), flat[i : i + n])
        out[i : i + n] = model(buf[:n])
    return out.view(cand.shape)


def restore(z, seq, pos, cand, chunk, model):
    total, length = cand.numel(), z.shape[1]
    width = min(chunk, total)
    buf = torch.empty(width, length, dtype=z.dtype)
    s, cells, replaced = _plan(z, seq, pos, cand, width)
    # a row is rewritten whole only in the chunks where it moves to another sequence
    moved = torch.ones(total, dtype=torch.bool)
    moved[width:] = s[width:] != s[:-width]
    whole = set((moved.nonzero().squeeze(1) // width).tolist())
    flat, out = cand.reshape(-1), torch.empty(total)
    for c, i in enumerate(range(0, total, width)):
        n = min(width, total - i)
        if i:
            buf.view(-1).index_put_((cells[i - width : i - width + n],), replaced[i - width : i - width + n])
        if c in whole:
            torch.index_select(z, 0, s[i : i + n], out=buf[:n])
        buf.view(-1).index_put_((cells[i : i + n],), flat[i : i + n])
        out[i : i + n] = model(buf[:n])
    return out.view(cand.shape)


def main() -> None:
    torch.manual_seed(0)
    batch, length, vocab = 2, 512, 30522
    m = batch * length
    z = torch.randint(0, vocab, (batch, length))
    seq, pos = torch.arange(m) // length, torch.arange(m) % length

    def stub(x):  # a cheap stand-in for the ratio network
        return x[:, 0].float()

    def summed(x):  # a model that reads every token, for the equality check
        return x.float().sum(1)

    for k in (64, 512):
        cand = torch.randint(0, vocab, (m, k))
        ref = whole_rows(z, seq, pos, cand, 1024, summed)
        for fn in (whole_rows, indices_once, restore, ratio_scorer):
            assert torch.equal(fn(z, seq, pos, cand, 1024, summed), ref), fn.__name__
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn(z, seq, pos, cand, 1024, stub)
                times.append(time.perf_counter() - t0)
            print(f"n_ratio {k:4d} {fn.__name__:<13} median {sorted(times)[2] * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()

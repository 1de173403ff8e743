"""Drop-in replacements for the sampling steps of the codebases users already run, on the ``gtl_kernels`` ops.

One module per codebase, each re-implemented from the published formulas (no code copied) with the original entry
point's argument names, shapes and meaning, plus a ``seeds=`` / ``generator=`` keyword for reproducible draws:

    mdlm        ``sample_categorical``, ``ddpm_update``, ``ddpm_caching_update`` (MDLM's SUBS reverse step)
    llada       ``generate``, ``get_num_transfer_tokens``, ``add_gumbel_noise`` (LLaDA's semi-autoregressive sampler)
    fast_dllm   LLaDA generation with threshold (and factor) parallel decoding
    dream       ``diffusion_generate``, ``sample_tokens``, ``step`` (Dream's sampler: shifted logits, confidence
                orders, top-p / top-k)
    gtl         the GTL authors' guided reverse step and planner step

Import the module of the codebase you use, e.g. ``from gtl_kernels.compat import llada``; the before/after lines
for each are in ``docs/MIGRATING.md``.
"""

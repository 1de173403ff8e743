"""Guided Transfer Learning (GTL) for masked discrete diffusion, built on the ``gtl_kernels`` ops.

Modules:
    schedule   log-linear schedule, forward masking, MDLM's continuous-time loss
    nets       transformer denoiser (AdaLN, SUBS), sequence scorers (classifiers, ratio network), planner
    training   training loops (denoisers, classifiers, three ratio estimators, planner)
    progress   tqdm bars, one terminal line per worker process
    samplers   unguided / guided ancestral samplers and the scheduled (planner) sampler
    chains     Markov chains: data, transition metrics, exact oracles (denoiser and ratio)
"""

from .chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio, estimate_transitions, transition_metrics
from .nets import Denoiser, Planner, SequenceScorer, TrunkConfig
from .samplers import (AncestralSampler, AncestralState, ConstantGamma, GuidedAncestralSampler, PiecewiseLinearGamma,
                       SamplerStats, ScheduledSampler, sequence_seeds)
from .schedule import LogLinearSchedule

__all__ = [
    "AncestralSampler",
    "AncestralState",
    "ConstantGamma",
    "Denoiser",
    "GuidedAncestralSampler",
    "LogLinearSchedule",
    "MarkovChain",
    "MarkovOracleDenoiser",
    "MarkovOracleRatio",
    "PiecewiseLinearGamma",
    "Planner",
    "SamplerStats",
    "ScheduledSampler",
    "SequenceScorer",
    "TrunkConfig",
    "estimate_transitions",
    "sequence_seeds",
    "transition_metrics",
]

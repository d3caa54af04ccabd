"""Efficient integrators for linear (and augmented phase-space) diffusion SDEs.

Pandey, Rudolph & Mandt, "Efficient Integrators for Diffusion Generative Models" (ICLR
2024): conjugate integrators (`conjugate.py`) and splitting integrators (`splitting.py`),
both returning `sampling.Sampler` objects with the PC sampler's contract.
"""
from score_sde_pds.integrators.common import GRIDS, time_grid  # noqa: F401
from score_sde_pds.integrators.conjugate import (  # noqa: F401
    B_MATRICES, CONJUGATE_RULES, conjugate_coefficients, get_conjugate_sampler)
from score_sde_pds.integrators.splitting import (  # noqa: F401
    SPLITTING_SCHEMES, get_splitting_sampler, splitting_plan)

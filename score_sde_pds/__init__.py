"""score_sde_pds: score-based diffusion sampling with preconditioning (PDS) in JAX/Flax."""

__version__ = "0.1.0"

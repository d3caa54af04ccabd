"""Linear SDEs of score-based generative modelling (Song et al., 2021), as pytrees.

Every SDE is a `flax.struct.dataclass`: its float hyper-parameters are traced leaves
(so a jitted sampler can take the SDE as an argument and a sweep can vmap over it),
while the number of discretisation steps `N` is static.

Shapes: `x` is (B, ...) (images are (B,H,W,C)), `t` is (B,) in (0, T]. Per-sample
scalars are broadcast over the trailing axes with `_bcast`.

`discretize(x, t, i)` takes the integer step index `i` of the ascending discrete grid
explicitly (i = 0 is the smallest noise level, i = N - 1 the largest). score_sde
recovers it from the float `t` as int(t (N-1) / T), which can round down at grid
points; the samplers here pass i = N - 1 - k at loop step k instead.
"""
from __future__ import annotations

import abc
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np


def _bcast(v, x):
  """Reshapes a (B,) array to broadcast against x of shape (B, ...)."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _per_sample_sum(v):
  return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


class SDE(abc.ABC):
  """Interface shared by all SDEs: dx = f(x, t) dt + g(t) dw on t in [0, T]."""

  N: int

  def __post_init__(self):  # called by the dataclass __init__ of every subclass
    if not isinstance(self.N, (int, np.integer)) or self.N < 1:
      raise ValueError(f'SDE N (config.model.num_scales) must be an integer >= 1, got {self.N!r}.')

  @property
  def T(self) -> float:
    return 1.0

  @abc.abstractmethod
  def sde(self, x, t):
    """Returns (drift (B,...), diffusion (B,)) of the forward SDE."""

  @abc.abstractmethod
  def marginal_prob(self, x, t):
    """Returns (mean (B,...), std (B,)) of p_t(x(t) | x(0) = x)."""

  @abc.abstractmethod
  def prior_sampling(self, rng, shape):
    """Draws x_T ~ p_T, shape `shape`."""

  @abc.abstractmethod
  def prior_logp(self, z):
    """log p_T(z) per sample, (B,)."""

  def discretize(self, x, t, i):
    """Euler-Maruyama discretisation x_{i+1} = x_i + f_i + G_i z (score_sde's default).

    Args:
      x: (B,...) state. t: (B,) times. i: int step index (unused here).
    Returns:
      f: (B,...) drift increment, G: (B,) noise scale.
    """
    del i
    dt = 1. / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def reverse(self, score_fn: Callable, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (or probability-flow ODE) driven by `score_fn(x, t)`."""
    return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
  """Reverse-time SDE dx = [f - g^2 s] dt + g dw_bar (Song et al. 2021, Eq. 6); with
  probability_flow the ODE dx = [f - 1/2 g^2 s] dt (Eq. 13)."""

  def __init__(self, fwd: SDE, score_fn: Callable, probability_flow: bool):
    self.fwd, self.score_fn, self.probability_flow = fwd, score_fn, probability_flow
    self.N = fwd.N

  @property
  def T(self):
    return self.fwd.T

  def sde(self, x, t, score=None):
    """(drift (B,...), diffusion (B,)); `score` may be passed to reuse an evaluation."""
    drift, diffusion = self.fwd.sde(x, t)
    score = self.score_fn(x, t) if score is None else score
    w = 0.5 if self.probability_flow else 1.
    drift = drift - _bcast(diffusion ** 2, x) * score * w
    diffusion = jnp.zeros_like(diffusion) if self.probability_flow else diffusion
    return drift, diffusion

  def discretize(self, x, t, i, score=None):
    """(rev_f (B,...), rev_G (B,)) with x_{i-1} = x_i - rev_f + rev_G z."""
    f, G = self.fwd.discretize(x, t, i)
    score = self.score_fn(x, t) if score is None else score
    w = 0.5 if self.probability_flow else 1.
    rev_f = f - _bcast(G ** 2, x) * score * w
    rev_G = jnp.zeros_like(G) if self.probability_flow else G
    return rev_f, rev_G


def _gaussian_prior_logp(z, std):
  n = np.prod(z.shape[1:])
  return -n / 2. * jnp.log(2 * np.pi * std ** 2) - _per_sample_sum(z ** 2) / (2. * std ** 2)


@flax.struct.dataclass
class _BetaSDE(SDE):
  """Shared by VPSDE and subVPSDE: the linear schedule beta(t) = beta_min + t (beta_max -
  beta_min), its DDPM discretisation and the mean coefficient exp(-1/2 int_0^t beta)."""
  beta_min: float = 0.1
  beta_max: float = 20.
  N: int = flax.struct.field(pytree_node=False, default=1000)

  @property
  def discrete_betas(self):
    """(N,) DDPM betas, linspace(beta_min / N, beta_max / N, N)."""
    return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

  @property
  def alphas(self):
    return 1. - self.discrete_betas

  def _beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def _log_mean_coeff(self, t):
    return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _gaussian_prior_logp(z, 1.)


@flax.struct.dataclass
class VPSDE(_BetaSDE):
  """Variance-preserving SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw (DDPM in
  continuous time; Song et al. 2021 Eq. 11)."""

  def sde(self, x, t):
    beta_t = self._beta(t)
    return -0.5 * _bcast(beta_t, x) * x, jnp.sqrt(beta_t)

  def marginal_prob(self, x, t):
    lmc = self._log_mean_coeff(t)
    return _bcast(jnp.exp(lmc), x) * x, jnp.sqrt(1. - jnp.exp(2. * lmc))

  def discretize(self, x, t, i):
    """DDPM step: f = (sqrt(alpha_i) - 1) x, G = sqrt(beta_i)."""
    del t
    beta = self.discrete_betas[i]
    f = (jnp.sqrt(1. - beta) - 1.) * x
    G = jnp.full((x.shape[0],), jnp.sqrt(beta), x.dtype)
    return f, G


@flax.struct.dataclass
class subVPSDE(_BetaSDE):  # pylint: disable=invalid-name
  """sub-VP SDE dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw
  (Song et al. 2021 Eq. 12); discretised by Euler-Maruyama."""

  def sde(self, x, t):
    beta_t = self._beta(t)
    discount = 1. - jnp.exp(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t ** 2)
    return -0.5 * _bcast(beta_t, x) * x, jnp.sqrt(beta_t * discount)

  def marginal_prob(self, x, t):
    lmc = self._log_mean_coeff(t)
    return _bcast(jnp.exp(lmc), x) * x, 1. - jnp.exp(2. * lmc)


@flax.struct.dataclass
class VESDE(SDE):
  """Variance-exploding SDE dx = sigma(t) sqrt(2 log(sigma_max/sigma_min)) dw,
  sigma(t) = sigma_min (sigma_max/sigma_min)^t (NCSN in continuous time)."""
  sigma_min: float = 0.01
  sigma_max: float = 50.
  N: int = flax.struct.field(pytree_node=False, default=1000)

  @property
  def discrete_sigmas(self):
    """(N,) ascending sigma_i = exp(linspace(log sigma_min, log sigma_max, N))."""
    return jnp.exp(jnp.linspace(jnp.log(self.sigma_min), jnp.log(self.sigma_max), self.N))

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x, t):
    drift = jnp.zeros_like(x)
    diffusion = self.sigma(t) * jnp.sqrt(2 * (jnp.log(self.sigma_max) - jnp.log(self.sigma_min)))
    return drift, diffusion

  def marginal_prob(self, x, t):
    return x, self.sigma(t)

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape) * self.sigma_max

  def prior_logp(self, z):
    return _gaussian_prior_logp(z, self.sigma_max)

  def discretize(self, x, t, i):
    """SMLD step: f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2), sigma_{-1} = 0."""
    del t
    sigmas = self.discrete_sigmas
    sigma = sigmas[i]
    adjacent = jnp.where(i == 0, 0., sigmas[jnp.maximum(i - 1, 0)])
    G = jnp.full((x.shape[0],), jnp.sqrt(sigma ** 2 - adjacent ** 2), x.dtype)
    return jnp.zeros_like(x), G


SDE_NAMES = ('vesde', 'vpsde', 'subvpsde')


def get_sde(config, N: int | None = None):
  """Builds the SDE named by config.training.sde; returns (sde, sampling_eps).

  N defaults to int(config.model.num_scales / config.sampling.speed_up) (PDS's fewer
  iterations); sampling_eps to 1e-5 (VE) or 1e-3 (VP, subVP) times speed_up, unless
  config.sampling.eps > 0.
  """
  name = config.training.sde.lower()
  speed_up = float(config.sampling.get('speed_up', 1.0))
  if not speed_up > 0:
    raise ValueError(f'config.sampling.speed_up must be > 0, got {speed_up!r}.')
  if N is None:
    N = int(config.model.num_scales / speed_up)
  if N < 1:
    raise ValueError(
        f'config.model.num_scales={config.model.num_scales} / config.sampling.speed_up='
        f'{speed_up} gives N={N} sampling steps; N must be >= 1.')
  if name == 'vesde':
    if not 0 < config.model.sigma_min < config.model.sigma_max:
      raise ValueError('config.model.sigma_min and sigma_max must satisfy 0 < sigma_min < '
                       f'sigma_max, got {config.model.sigma_min}, {config.model.sigma_max}.')
    sde = VESDE(sigma_min=float(config.model.sigma_min), sigma_max=float(config.model.sigma_max),
                N=N)
    eps = 1e-5
  elif name in ('vpsde', 'subvpsde'):
    if not 0 < config.model.beta_min < config.model.beta_max:
      raise ValueError('config.model.beta_min and beta_max must satisfy 0 < beta_min < '
                       f'beta_max, got {config.model.beta_min}, {config.model.beta_max}.')
    cls = VPSDE if name == 'vpsde' else subVPSDE
    sde = cls(beta_min=float(config.model.beta_min), beta_max=float(config.model.beta_max), N=N)
    eps = 1e-3
  else:
    raise ValueError(f'config.training.sde={config.training.sde!r} is not known; '
                     f'valid names: {list(SDE_NAMES)}.')
  user_eps = float(config.sampling.get('eps', 0.) or 0.)
  eps = user_eps if user_eps > 0 else eps * speed_up
  if not 0 < eps < sde.T:
    raise ValueError(f'sampling eps={eps} (config.sampling.eps / speed_up) must lie in (0, T=1).')
  return sde, eps

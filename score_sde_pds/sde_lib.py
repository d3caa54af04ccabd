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
import math
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

  # -- linear block description (see "Linear SDEs" below) -------------------------------
  # dz = F_t z dt + G_t dw acting per channel block of size k = block_dim: the state
  # (B,...,k*C) holds k blocks of C channels (x first), and F_t, G_t G_t^T, the transition
  # matrix and the kernel covariance are (k,k) matrices applied to every pixel and channel.
  block_dim = 1
  is_augmented = False

  def drift_block(self, t):
    """F_t, shape t.shape + (k, k)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def diffusion_block(self, t):
    """G_t G_t^T, shape t.shape + (k, k)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def transition_block(self, t, s=0.):
    """Psi(t, s) with z_t = Psi(t, s) z_s + noise, shape broadcast(t, s).shape + (k, k)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def init_cov_block(self):
    """Sigma_0 of the perturbation kernel (k, k) (0 for VP; sigma_min^2 for VE; for
    CLD/PSLD diag(0, kappa M): m_0 is marginalised, as in their HSM training)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def prior_cov_block(self):
    """Covariance of the prior p_T per block (k, k)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def cov_block(self, t):
    """Sigma_t = Psi Sigma_0 Psi^T + int_0^t Psi(t,s) G G^T Psi(t,s)^T ds, t.shape + (k, k)."""
    raise NotImplementedError(f'{type(self).__name__} has no linear block description.')

  def chol_block(self, t):
    """Lower Cholesky factor L_t of Sigma_t (L L^T = Sigma_t), t.shape + (k, k)."""
    return block_chol(self.cov_block(t))

  def score_to_eps(self, score, t):
    """eps = -L_t^T score (the epsilon parameterisation), score (B,...,kC), t (B,)."""
    return -apply_block(block_transpose(self.chol_block(t)), score)

  def eps_to_score(self, eps, t):
    """score = -L_t^{-T} eps, inverse of `score_to_eps`; eps (B,...,kC), t (B,)."""
    return -apply_block(block_inv(block_transpose(self.chol_block(t))), eps)

  def marginal_moments(self, z0, t):
    """(mean (B,...,kC), cov (B,k,k)) of the kernel p_t(z | z_0): Psi(t,0) z0 and Sigma_t."""
    return apply_block(self.transition_block(t), z0), self.cov_block(t)


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

  def drift_block(self, t):
    xp, t = _xp_t(self, t)
    return (-0.5 * self._beta(t))[..., None, None]

  def transition_block(self, t, s=0.):
    xp, t = _xp_t(self, t)
    return xp.exp(self._log_mean_coeff(t) - self._log_mean_coeff(xp.asarray(s)))[..., None, None]

  def init_cov_block(self):
    return np.zeros((1, 1))

  def prior_cov_block(self):
    return np.ones((1, 1))


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

  def diffusion_block(self, t):
    xp, t = _xp_t(self, t)
    return self._beta(t)[..., None, None]

  def cov_block(self, t):
    """1 - exp(2 lmc(t)) = std(t)^2 of `marginal_prob`."""
    xp, t = _xp_t(self, t)
    return (-xp.expm1(2. * self._log_mean_coeff(t)))[..., None, None]


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

  def diffusion_block(self, t):
    xp, t = _xp_t(self, t)
    return (self._beta(t) * -xp.expm1(4. * self._log_mean_coeff(t)))[..., None, None]

  def cov_block(self, t):
    """(1 - exp(2 lmc(t)))^2 = std(t)^2 of `marginal_prob` (subVP std has no square root)."""
    xp, t = _xp_t(self, t)
    return (xp.expm1(2. * self._log_mean_coeff(t)) ** 2)[..., None, None]


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

  def drift_block(self, t):
    xp, t = _xp_t(self, t)
    return xp.zeros(t.shape + (1, 1), t.dtype)

  def diffusion_block(self, t):
    """d sigma(t)^2 / dt = 2 sigma(t)^2 log(sigma_max / sigma_min)."""
    xp, t = _xp_t(self, t)
    return (2. * self.sigma(t) ** 2 * xp.log(self.sigma_max / self.sigma_min))[..., None, None]

  def transition_block(self, t, s=0.):
    xp, t = _xp_t(self, t)
    return xp.ones(xp.broadcast_shapes(t.shape, xp.shape(s)) + (1, 1), t.dtype)

  def init_cov_block(self):
    """sigma_min^2: `marginal_prob` has std sigma(t), so sigma(0) = sigma_min at t = 0."""
    xp = _xp(*jax.tree.leaves(self))
    return self.sigma_min ** 2 * xp.ones((1, 1))

  def prior_cov_block(self):
    xp = _xp(*jax.tree.leaves(self))
    return self.sigma_max ** 2 * xp.ones((1, 1))

  def cov_block(self, t):
    xp, t = _xp_t(self, t)
    return (self.sigma(t) ** 2)[..., None, None]


# ----------------------------------------------------------------------------- linear SDEs
#
# Every SDE here is linear, dz = F_t z dt + G_t dw, and acts identically on each pixel and
# channel of a block of k variables: F_t = F_t^blk (x) I, G_t G_t^T = (G G^T)_t^blk (x) I
# with (k,k) block matrices. VP, subVP and VE are 1x1 blocks (z = x); CLD and PSLD are 2x2
# blocks on the augmented state z = [x; m] (data x, momentum m), stacked on the CHANNEL
# axis with x first: z[..., :C] = x, z[..., C:] = m, so z is (B,H,W,2C).
#
# Kernel moments (Sarkka & Solin, Applied SDEs, Eq. 6.7): z_t | z_s ~ N(Psi(t,s) z_s, .),
#   d Psi(t,s) / dt = F_t Psi(t,s),  d Sigma_t / dt = F_t Sigma_t + Sigma_t F_t^T + G_t G_t^T.
# The network sees z_t = Psi(t,0) z_0 + L_t eps, Sigma_t = L_t L_t^T (L_t lower Cholesky),
# so score = -L_t^{-T} eps and eps = -L_t^T score (PSLD's "lower" decomposition).
#
# Block methods work on numpy (host, float64 when given float64 times and a host SDE, see
# `host_sde`) and on jax arrays (traced), whichever the time argument or the SDE's leaves are.


def _xp(*vals):
  """jax.numpy if any value is a jax array or tracer, else numpy."""
  for v in vals:
    if isinstance(v, jax.Array):
      return jnp
  return np


def _xp_t(sde, t):
  xp = _xp(t, *jax.tree.leaves(sde))
  t = xp.asarray(t, np.float64) if xp is np else jnp.asarray(t)
  return xp, t


def host_sde(sde):
  """The same SDE with python-float leaves, so host-side block methods run in float64."""
  return jax.tree.map(lambda v: float(np.asarray(v)), sde)


def _mat2(xp, a, b, c, d):
  """[[a, b], [c, d]] with broadcast entries -> (..., 2, 2)."""
  a, b, c, d = xp.broadcast_arrays(*(xp.asarray(v) for v in (a, b, c, d)))
  return xp.stack([xp.stack([a, b], -1), xp.stack([c, d], -1)], -2)


def block_transpose(P):
  return P.swapaxes(-1, -2)


def block_inv(P):
  """Inverse of (..., k, k) blocks, k in {1, 2} (closed form, traceable)."""
  xp = _xp(P)
  if P.shape[-1] == 1:
    return 1. / P
  a, b, c, d = P[..., 0, 0], P[..., 0, 1], P[..., 1, 0], P[..., 1, 1]
  det = a * d - b * c
  return _mat2(xp, d / det, -b / det, -c / det, a / det)


def block_chol(S):
  """Lower Cholesky factor of symmetric positive (..., k, k) blocks, k in {1, 2}."""
  xp = _xp(S)
  if S.shape[-1] == 1:
    return xp.sqrt(S)
  l11 = xp.sqrt(S[..., 0, 0])
  l21 = S[..., 1, 0] / l11
  l22 = xp.sqrt(S[..., 1, 1] - l21 ** 2)
  return _mat2(xp, l11, xp.zeros_like(l11), l21, l22)


def apply_block(P, z):
  """Applies (k,k) blocks to a stacked state: out[..., i C + c] = sum_j P_ij z[..., j C + c].

  Args:
    P: (k, k) or (B, k, k) (one block per sample).
    z: (B, ..., k C).
  Returns:
    (B, ..., k C), z's dtype for jax inputs.
  """
  xp = _xp(P, z)
  k = P.shape[-1]
  if k == 1:
    p = P[..., 0, 0]
    if xp.ndim(p) == 1:
      p = p.reshape(p.shape + (1,) * (z.ndim - 1))
    return (p * z).astype(z.dtype)
  C = z.shape[-1] // k
  z5 = z.reshape(z.shape[:-1] + (k, C))
  if P.ndim == 3:
    P = P.reshape(P.shape[:1] + (1,) * (z.ndim - 2) + P.shape[1:])
  out = xp.matmul(P.astype(z.dtype) if xp is jnp else P, z5)
  return out.reshape(z.shape)


def data_part(z, k):
  """The x (data) channels of a stacked state (B, ..., k C) -> (B, ..., C)."""
  return z[..., :z.shape[-1] // k]


def _phi(xp, k, a):
  """phi_k(a) = int_0^1 v^k e^{a v} dv for a <= 0 (k = 0, 1, 2), stable for small |a|."""
  small = xp.abs(a) < 1.
  a_s = xp.where(small, a, 0.)
  series = 0.
  term = 1.
  for n in range(14):       # sum_n a^n / (n! (n + k + 1)); |a| < 1: error < 1e-12
    series = series + term / (n + k + 1)
    term = term * a_s / (n + 1)
  a_l = xp.where(small, -1., a)
  e = xp.exp(a_l)
  if k == 0:
    closed = xp.expm1(a_l) / a_l
  elif k == 1:
    closed = (e * (a_l - 1.) + 1.) / a_l ** 2
  else:
    closed = (e * (a_l ** 2 - 2. * a_l + 2.) - 2.) / a_l ** 3
  return xp.where(small, series, closed)


class _PhaseSpaceSDE(SDE):
  """Critically damped phase-space SDEs on z = [x; m] (CLD, PSLD): 2x2 blocks with
  F_t = beta(t) K and G_t G_t^T = beta(t) diag(D), K and D constant.

  With tau = b(t) = int_0^t beta the SDE is time-homogeneous in tau. Critical damping
  makes K = lam I + N with lam = tr(K) / 2 and N^2 = 0 (a double eigenvalue), so
    Psi(t, s) = e^{lam d} (I + N d),  d = b(t) - b(s)                                (1)
  and the kernel covariance Sigma_t = Psi Sigma_0 Psi^T + Q(b(t)) with the noise part
    Q(tau) = int_0^tau e^{2 lam u} (I + N u) D (I + N u)^T du
           = tau D phi_0 + tau^2 (N D + D N^T) phi_1 + tau^3 N D N^T phi_2,         (2)
  phi_k = int_0^1 v^k e^{2 lam tau v} dv, free of the cancellation in the equivalent
  stationary form P + Psi (Sigma_0 - P) Psi^T (P = the prior covariance diag(1, M),
  which solves K P + P K^T + diag(D) = 0).

  Subclasses define the fields and `_K`, `_D`, `_beta`, `_int_beta`, `mass`, `kappa`.
  """
  block_dim = 2
  is_augmented = True

  def _lam_N(self, xp):
    K = self._K(xp)
    lam = 0.5 * (K[0, 0] + K[1, 1])
    return lam, K - lam * xp.eye(2)

  def drift_block(self, t):
    xp, t = _xp_t(self, t)
    return self._beta(t)[..., None, None] * self._K(xp)

  def diffusion_block(self, t):
    xp, t = _xp_t(self, t)
    d = self._D(xp)
    b = self._beta(t)
    return _mat2(xp, b * d[0], 0. * b, 0. * b, b * d[1])

  def transition_block(self, t, s=0.):
    xp, t = _xp_t(self, t)
    d = self._int_beta(t) - self._int_beta(xp.asarray(s))
    lam, N = self._lam_N(xp)
    return xp.exp(lam * d)[..., None, None] * (xp.eye(2) + N * d[..., None, None])

  def init_cov_block(self):
    xp = _xp(*jax.tree.leaves(self))
    z = 0. * self.mass
    return _mat2(xp, z, z, z, self.kappa * self.mass)

  def prior_cov_block(self):
    xp = _xp(*jax.tree.leaves(self))
    z = 0. * self.mass
    return _mat2(xp, 1. + z, z, z, self.mass)

  def cov_block(self, t):
    xp, t = _xp_t(self, t)
    tau = self._int_beta(t)[..., None, None]
    lam, N = self._lam_N(xp)
    d = self._D(xp)
    D = _mat2(xp, d[0], 0. * d[0], 0. * d[0], d[1])
    a = 2. * lam * tau
    Q = (tau * D * _phi(xp, 0, a) + tau ** 2 * (N @ D + D @ N.T) * _phi(xp, 1, a)
         + tau ** 3 * (N @ D @ N.T) * _phi(xp, 2, a))
    Psi = self.transition_block(t)
    return Psi @ self.init_cov_block() @ block_transpose(Psi) + Q

  # -- the SDE interface on the stacked state (B, ..., 2C) -------------------------------

  def _per_channel(self, v, x):
    """(B, 2) per-block values -> (B, 1, ..., 1, 2C) matching the stacked channels of x."""
    C = x.shape[-1] // 2
    v = jnp.repeat(v, C, axis=-1)
    return v.reshape(v.shape[:1] + (1,) * (x.ndim - 2) + v.shape[1:])

  def sde(self, x, t):
    """(drift F_t z (B,...,2C), diffusion (B,1,..,1,2C) per channel: sqrt(beta D))."""
    drift = apply_block(self.drift_block(t), x)
    g = jnp.sqrt(self._beta(t)[:, None] * self._D(jnp)[None, :])
    return drift, self._per_channel(g, x)

  def marginal_prob(self, x, t):
    raise NotImplementedError(
        f'{type(self).__name__}.marginal_prob: the augmented state [x; m] has a 2x2 kernel '
        'covariance per pixel, not a scalar std; use marginal_moments(z0, t) (mean, (B,2,2) '
        'covariance), transition_block / cov_block, or score_to_eps / eps_to_score.')

  def prior_sampling(self, rng, shape):
    """z_T ~ N(0, diag(1, M)) per pixel; `shape` is the stacked state shape (B,...,2C)."""
    z = jax.random.normal(rng, shape)
    std = jnp.sqrt(jnp.asarray([1., self.mass]))
    return z * self._per_channel(jnp.broadcast_to(std, (shape[0], 2)), z)

  def prior_logp(self, z):
    C = z.shape[-1] // 2
    x, m = z[..., :C], z[..., C:]
    return _gaussian_prior_logp(x, 1.) + _gaussian_prior_logp(m, jnp.sqrt(self.mass))

  def prior_std(self, channels: int):
    """Per-channel prior std of the stacked state, (channels,) = [1]*C + [sqrt(M)]*C."""
    C = channels // 2
    return jnp.concatenate([jnp.ones((C,)), jnp.full((C,), jnp.sqrt(self.mass))])


@flax.struct.dataclass
class PSLDSDE(_PhaseSpaceSDE):
  """Phase Space Langevin Diffusion (Pandey & Mandt, ICCV 2023) on z = [x; m]:

    dz = beta(t)/2 [[-Gamma, M^-1], [-1, -nu]] z dt + sqrt(beta(t)) diag(sqrt(Gamma), sqrt(M nu)) dw,

  beta(t) = beta_min + t (beta_max - beta_min), critical damping M^-1 = (Gamma - nu)^2 / 4,
  prior N(0, diag(1, M)), m_0 ~ N(0, kappa M). CIFAR-10 (paper/reference code): Gamma =
  0.02, nu = 4.02, beta = 8 (constant), kappa = 0.04, T = 1, sampling eps = 1e-3.
  """
  beta_min: float = 8.
  beta_max: float = 8.
  gamma: float = 0.02
  nu: float = 4.02
  kappa: float = 0.04
  N: int = flax.struct.field(pytree_node=False, default=1000)

  @property
  def mass(self):
    """M = 4 / (Gamma - nu)^2 (critical damping)."""
    return 4. / (self.gamma - self.nu) ** 2

  def _K(self, xp):
    return 0.5 * _mat2(xp, -self.gamma, 1. / self.mass, -1., -self.nu)

  def _D(self, xp):
    return xp.stack([xp.asarray(self.gamma), xp.asarray(self.mass * self.nu)])

  def _beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def _int_beta(self, t):
    return self.beta_min * t + 0.5 * t ** 2 * (self.beta_max - self.beta_min)


@flax.struct.dataclass
class CLDSDE(_PhaseSpaceSDE):
  """Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis, ICLR 2022) on z = [x; m]:

    dx = beta M^-1 m dt,  dm = -beta x dt - Gamma beta M^-1 m dt + sqrt(2 Gamma beta) dw,

  constant beta, friction Gamma = 2 sqrt(M) (critical damping), prior N(0, diag(1, M)),
  m_0 ~ N(0, kappa M) (the paper's gamma). Paper defaults: beta = 4, M^-1 = 4, kappa = 0.04.
  It is PSLD with Gamma_psld = 0, nu = Gamma M^-1 and beta_psld = 2 beta.
  """
  beta: float = 4.
  m_inv: float = 4.
  kappa: float = 0.04
  N: int = flax.struct.field(pytree_node=False, default=1000)

  @property
  def mass(self):
    return 1. / self.m_inv

  @property
  def friction(self):
    """Gamma = 2 sqrt(M)."""
    return 2. * self.mass ** 0.5

  def _K(self, xp):
    return _mat2(xp, 0., self.m_inv, -1., -self.friction * self.m_inv)

  def _D(self, xp):
    return xp.stack([xp.asarray(0. * self.beta), xp.asarray(2. * self.friction)])

  def _beta(self, t):
    return self.beta + 0. * t

  def _int_beta(self, t):
    return self.beta * t


SDE_NAMES = ('vesde', 'vpsde', 'subvpsde', 'cld', 'psld')


def speed_up_for(num_scales: int, steps: int) -> float:
  """The config.sampling.speed_up for which get_sde's N = int(num_scales / speed_up) is
  exactly `steps`: num_scales / steps, lowered by ulps where float division rounds N down."""
  su = num_scales / steps
  while int(num_scales / su) < steps:
    su = math.nextafter(su, 0.)
  return su


def get_sde(config, N: int | None = None):
  """Builds the SDE named by config.training.sde; returns (sde, sampling_eps).

  N defaults to int(config.model.num_scales / config.sampling.speed_up) (PDS's fewer
  iterations); sampling_eps to 1e-5 (VE) or 1e-3 (VP, subVP, CLD, PSLD) times speed_up,
  unless config.sampling.eps > 0. CLD reads config.model.cld_{beta, m_inv, kappa}, PSLD
  config.model.psld_{beta_min, beta_max, gamma, nu, kappa}.
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
  elif name == 'psld':
    m = config.model
    vals = {k: float(m.get(f'psld_{k}')) for k in ('beta_min', 'beta_max', 'gamma', 'nu', 'kappa')}
    if not 0 < vals['beta_min'] <= vals['beta_max']:
      raise ValueError('config.model.psld_beta_min and psld_beta_max must satisfy 0 < '
                       f'psld_beta_min <= psld_beta_max, got {vals["beta_min"]}, '
                       f'{vals["beta_max"]}.')
    for k in ('gamma', 'nu'):
      if not vals[k] >= 0:
        raise ValueError(f'config.model.psld_{k} must be >= 0, got {vals[k]}.')
    if vals['gamma'] == vals['nu']:
      raise ValueError('config.model.psld_gamma and psld_nu must differ (critical damping '
                       f'M^-1 = (gamma - nu)^2 / 4 > 0), got {vals["gamma"]} for both.')
    if not vals['kappa'] >= 0:
      raise ValueError(f'config.model.psld_kappa must be >= 0, got {vals["kappa"]}.')
    sde = PSLDSDE(N=N, **vals)
    eps = 1e-3
  elif name == 'cld':
    m = config.model
    vals = {k: float(m.get(f'cld_{k}')) for k in ('beta', 'm_inv', 'kappa')}
    for k in ('beta', 'm_inv'):
      if not vals[k] > 0:
        raise ValueError(f'config.model.cld_{k} must be > 0, got {vals[k]}.')
    if not vals['kappa'] >= 0:
      raise ValueError(f'config.model.cld_kappa must be >= 0, got {vals["kappa"]}.')
    sde = CLDSDE(N=N, **vals)
    eps = 1e-3
  else:
    raise ValueError(f'config.training.sde={config.training.sde!r} is not known; '
                     f'valid names: {list(SDE_NAMES)}.')
  user_eps = float(config.sampling.get('eps', 0.) or 0.)
  eps = user_eps if user_eps > 0 else eps * speed_up
  if not 0 < eps < sde.T:
    raise ValueError(f'sampling eps={eps} (config.sampling.eps / speed_up) must lie in (0, T=1).')
  return sde, eps

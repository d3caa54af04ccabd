"""Pieces shared by the conjugate and splitting integrators.

Time grids (`time_grid`), host-side Gauss-Legendre quadrature (`gl_nodes`), argument
checks, and `make_sampler`, the one jitted `lax.scan` driver that both families plug
their per-step rules into. The driver follows sampling.py's contract exactly: sample b of
a call draws all its noise from `fold_in(rng, offset + b)` (`sampling.sample_keys`), its
prior from tag 0 of that key and step k's noise from `fold_in(fold_in(key_b, k + 1), tag)`,
so a sample does not depend on the batch size or the device count.

States: for an SDE with k x k blocks (sde.block_dim) the sampler state is (B,H,W,kC), x
first (sde_lib, "Linear SDEs"); score_fn(z, t) takes and returns that shape. Samplers
return the data part x, (B,H,W,C).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from score_sde_pds import sampling, sde_lib

GRIDS = ('uniform', 'quadratic', 'logsnr')


# ----------------------------------------------------------------------------- host helpers


def log_snr(sde, t):
  """log SNR of the data block, log(Psi_11(t)^2 / Sigma_11(t)) (host, float64)."""
  t = np.asarray(t, np.float64)
  psi = sde.transition_block(t)
  sig = sde.cov_block(t)
  return np.log(psi[..., 0, 0] ** 2 / sig[..., 0, 0])


def time_grid(sde, num_steps: int, eps: float, grid: str = 'uniform') -> np.ndarray:
  """Descending times t_0 = T > t_1 > ... > t_N = eps, (N + 1,) float64.

  'uniform':   t_i = T - i (T - eps) / N.
  'quadratic': t_i = eps + (T - eps) (1 - i / N)^2 (dense near eps, DDIM's quadratic).
  'logsnr':    uniform in the data block's log-SNR lambda(t) = log(Psi_11^2 / Sigma_11)
               between lambda(T) and lambda(eps) (DPM-Solver's choice), inverted by
               bisection (lambda must be decreasing in t).
  """
  sde = sde_lib.host_sde(sde)
  T = float(sde.T)
  u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  if grid == 'uniform':
    ts = T - u * (T - eps)
  elif grid == 'quadratic':
    ts = eps + (T - eps) * (1. - u) ** 2
  elif grid == 'logsnr':
    fine = np.linspace(eps, T, 2049)
    lam = log_snr(sde, fine)
    if not np.all(np.diff(lam) < 0):
      raise ValueError(f"grid='logsnr' needs a log-SNR decreasing in t; {type(sde).__name__}'s "
                       'is not. Use config.sampling.grid=uniform or quadratic.')
    target = log_snr(sde, T) + u * (log_snr(sde, eps) - log_snr(sde, T))
    lo, hi = np.full_like(u, eps), np.full_like(u, T)
    for _ in range(100):                                  # bisection to machine precision
      mid = 0.5 * (lo + hi)
      above = log_snr(sde, mid) > target                  # mid too early (SNR too high)
      lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    ts = 0.5 * (lo + hi)
  else:
    raise ValueError(f'config.sampling.grid={grid!r} is not known; valid: {list(GRIDS)}.')
  ts[0], ts[-1] = T, eps
  return ts


def gl_nodes(a, b, n: int = 24):
  """Gauss-Legendre nodes and weights on [a, b] (vectorised over a, b; b < a gives the
  oriented integral int_a^b). Returns (s (..., n), w (..., n))."""
  x, w = np.polynomial.legendre.leggauss(n)
  a = np.asarray(a, np.float64)[..., None]
  b = np.asarray(b, np.float64)[..., None]
  return a + (b - a) * (x + 1.) / 2., w * (b - a) / 2.


def gl_nodes_from_zero(b, n: int = 24):
  """Nodes/weights of int_0^b with s = b u^2 (removes an s^-1/2 singularity at 0)."""
  u, w = gl_nodes(0., 1., n)
  b = np.asarray(b, np.float64)[..., None]
  return b * u ** 2, w * 2. * b * u


def check_common(sde, shape, num_steps, eps, grid):
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f'sampling shape must be (B, ...) with positive sizes, got {shape}.')
  if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 1):
    raise ValueError(f'number of steps (config.sampling.num_steps, or N = num_scales / '
                     f'speed_up) must be an integer >= 1, got {num_steps!r}.')
  if not 0 < eps < sde.T:
    raise ValueError(f'sampling eps must lie in (0, T={sde.T}), got {eps!r}.')
  if grid not in GRIDS:
    raise ValueError(f'config.sampling.grid={grid!r} is not known; valid: {list(GRIDS)}.')
  if not hasattr(sde, 'block_dim'):
    raise ValueError(f'{type(sde).__name__} has no linear block description.')


def state_shape(sde, shape):
  """(B, ..., C) data shape -> (B, ..., k C) sampler state shape."""
  shape = tuple(int(s) for s in shape)
  return shape[:-1] + (shape[-1] * sde.block_dim,)


def f32(tree):
  """Host coefficients -> jax arrays of the default float dtype (float32; float64 under x64)."""
  dtype = jnp.result_type(float)
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), tree)


# ----------------------------------------------------------------------------- the driver


@dataclasses.dataclass(frozen=True)
class Ctx:
  """What an integrator step sees (trace-time object).

  score(z, t): the score at scalar time t (counted by the rule, not here).
  noise(tag): the step's standard normal draw number `tag`, (B,...,kC).
  precond: Preconditioner or None. k: block size. local: per-device wrapper (sampling).
  """
  score_fn: Callable
  noise: Callable
  precond: Any
  k: int
  local: Callable

  def score(self, z, t):
    return self.score_fn(z, jnp.full((z.shape[0],), t, z.dtype))

  def precond_blocks(self, fn_name, v):
    """Applies precond.<fn_name> (noise or drift) to every C-channel block of v."""
    p = self.precond
    if p is None or p.is_identity:
      return v
    C = v.shape[-1] // self.k
    f = self.local(lambda q, u: getattr(q, fn_name)(u))
    return jnp.concatenate([f(p, v[..., j * C:(j + 1) * C]) for j in range(self.k)], -1)


def make_sampler(sde, shape, *, num_steps: int, nfe: int, xs: dict, init: Callable,
                 step: Callable, finish: Callable | None = None, noise_source=None,
                 preconditioner=None, extra_info: dict | None = None) -> sampling.Sampler:
  """Wraps per-step rules into a `sampling.Sampler` (one jitted lax.scan per call).

  Args:
    sde: the SDE (its block_dim k gives the state (B,...,kC)).
    shape: data shape (B, ..., C).
    num_steps: scan length N. nfe: network evaluations of one call (reported).
    xs: dict of (N, ...) arrays (the per-step coefficients), sliced per step.
    init(ctx, z_T) -> carry: carry[0] is the state (checked for non-finite values).
    step(ctx, carry, x_k, k) -> carry, x_k the k-th slice of xs.
    finish(ctx, carry) -> z (B,...,kC); default carry[0].
    noise_source: optional noise_source(k, tag) -> (B,...,kC) replacing the Gaussian draws
      (k = -1, tag 0: the prior's standard normal draw), as in sampling.get_pc_sampler.
    preconditioner: default Preconditioner for `Sampler.__call__`.
    extra_info: static entries added to info.
  Returns:
    sampling.Sampler (with attribute nfe); run(rng, score_fn, precond=None, offset=0) ->
    (x (B,...,C), nfe, info with 'first_nonfinite_step' (-1 if all finite)).
  """
  sshape = state_shape(sde, shape)
  B, k = sshape[0], sde.block_dim
  shard, _, local = sampling._sharders(B)
  noise = sampling._normal_fn(sshape)
  prior_chol = f32(sde_lib.block_chol(np.asarray(sde_lib.host_sde(sde).prior_cov_block())))
  xs = f32(xs)
  finish = finish or (lambda ctx, carry: carry[0])

  def run(rng, score_fn, precond=None, offset=0):
    if local is not sampling._no_local:
      score_fn = local(score_fn, (PartitionSpec('data'), PartitionSpec('data')))
    keys = shard(sampling.sample_keys(rng, offset, B))
    z = noise(keys, 0) if noise_source is None else noise_source(-1, 0)
    z = shard(sde_lib.apply_block(prior_chol, z))
    ctx0 = Ctx(score_fn=score_fn, noise=None, precond=precond, k=k, local=local)
    carry = init(ctx0, z)

    def body(c, inp):
      carry, bad = c
      kk, x_k = inp
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, kk + 1)
      if noise_source is None:
        nz = lambda tag: noise(step_keys, tag)
      else:
        nz = lambda tag: noise_source(kk, tag)
      ctx = dataclasses.replace(ctx0, noise=nz)
      carry = step(ctx, carry, x_k, kk)
      carry = (shard(carry[0]),) + tuple(carry[1:])
      bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(carry[0])), kk, bad)
      return (carry, bad), None

    (carry, bad), _ = jax.lax.scan(
        body, (carry, jnp.asarray(-1, jnp.int32)), (jnp.arange(num_steps, dtype=jnp.int32), xs))
    z = finish(ctx0, carry)
    bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(z)), num_steps, bad)
    info = {'first_nonfinite_step': bad}
    info.update(extra_info or {})
    return sde_lib.data_part(z, k), nfe, info

  sampler = sampling.Sampler(run, preconditioner)
  sampler.nfe = int(nfe)
  return sampler

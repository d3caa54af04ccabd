"""Predictor-corrector and ODE samplers, one jitted `lax.scan` per sampling run.

Public contract
---------------
`get_pc_sampler(sde, shape, predictor, corrector, *, snr, ...)` and
`get_ode_sampler(sde, shape, ...)` return `sampler(rng, score_fn, offset=0)
-> (samples, nfe)`, where `score_fn(x, t)` maps x (B,H,W,C) and t (B,) to the score
(B,H,W,C); any jax-traceable function plugs in (an analytic oracle, or a network closed
over its params). `get_sampling_fn(config, sde, model, shape, eps)` is the config-driven
form whose jitted function takes the network params as arguments:
`sampling_fn(rng, params, states, offset=0) -> (samples, nfe)`.

Randomness
----------
Sample b of a call draws all its noise from its own key `fold_in(rng, offset + b)`:
the prior from `fold_in(key_b, 0)`, step k from `fold_in(key_b, k + 1)` (predictor
tag 0, corrector sub-step j tag j + 1). So the k-th sample of a run is the same for any
batch size or device count whenever samples do not interact, i.e. unless the
Langevin corrector's step size uses the batch-mean norm (`corrector_norm='batch'`, the
score_sde rule; `'sample'` uses per-sample norms).

Predictors and correctors are small pure functions in name registries
(`PREDICTORS`, `CORRECTORS`) with score_sde's names. Each step runs the corrector
first, then the predictor (score_sde's order); the sampler returns the last x_mean when
`denoise` (score_sde's `noise_removal`).

Preconditioning (PDS)
---------------------
A `Preconditioner` P (score_sde_pds.preconditioning) with `noise(z) = M z` and
`drift(g) = M M^T g (+ omega S g)` is a pytree argument of the jitted function, so a new
alpha does not recompile and a stacked batch of preconditioners can be vmapped.
mode='reference' reproduces fudan-zvg/PDS (prior x_T = prior_std M z; reverse-diffusion
x_mean = x - M M^T rev_f, x = x_mean + G M z; Langevin g = M M^T s, n = M z with the
snr rule on their norms); euler_maruyama and ald are preconditioned in the same way.
mode='marginal' uses the marginal-preserving split drift f - 1/2 g^2 s
- 1/2 eta g^2 M M^T s with noise sqrt(eta) g M z (REFERENCE.md §3).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from score_sde_pds import sde_lib

# ----------------------------------------------------------------------------- registries

PREDICTORS: dict[str, Callable] = {}
CORRECTORS: dict[str, Callable] = {}
# network evaluations per call of each registered function
_PREDICTOR_NFE: dict[str, int] = {}
_CORRECTOR_NFE: dict[str, int] = {}


def register_predictor(name: str, nfe: int = 1):
  def deco(fn):
    if name in PREDICTORS:
      raise ValueError(f'predictor {name!r} already registered')
    PREDICTORS[name], _PREDICTOR_NFE[name] = fn, nfe
    return fn
  return deco


def register_corrector(name: str, nfe: int = 1):
  def deco(fn):
    if name in CORRECTORS:
      raise ValueError(f'corrector {name!r} already registered')
    CORRECTORS[name], _CORRECTOR_NFE[name] = fn, nfe
    return fn
  return deco


def _lookup(registry, name, what):
  if name is None:
    name = 'none'
  name = str(name).lower()
  if name not in registry:
    close = difflib.get_close_matches(name, registry, n=1)
    hint = f' Did you mean {close[0]!r}?' if close else ''
    raise ValueError(f'{what}={name!r} is not known; valid names: {sorted(registry)}.{hint}')
  return name


def get_predictor(name):
  return PREDICTORS[_lookup(PREDICTORS, name, 'config.sampling.predictor')]


def get_corrector(name):
  return CORRECTORS[_lookup(CORRECTORS, name, 'config.sampling.corrector')]


# ----------------------------------------------------------------------------- step context


def _bcast(v, x):
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _norms(v):
  """Per-sample L2 norms, (B,...) -> (B,)."""
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1))


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a predictor/corrector step sees (a trace-time object, not a pytree).

  Attributes:
    sde: the forward SDE. score_fn: s(x (B,...), t (B,)) -> (B,...).
    precond: Preconditioner or None (no PDS). mode: 'reference' | 'marginal'.
    eta: marginal-mode weight. probability_flow: use the probability-flow drift.
    snr, n_steps, corrector_norm: Langevin settings. N: number of steps.
    noise: noise(keys, tag) -> z (B,...), the per-sample Gaussian draw.
    replicate: puts a (B,) array on every device before a batch reduction.
    local: local(fn)(p, v) runs fn(p, v) -> (B,...) on each device's shard of the
      batch-sharded v (p replicated): XLA does not split FFTs over the batch.
  """
  sde: Any
  score_fn: Callable
  precond: Any
  mode: str
  eta: float
  probability_flow: bool
  snr: float
  n_steps: int
  corrector_norm: str
  N: int
  noise: Callable
  replicate: Callable
  local: Callable = lambda fn: fn

  def M(self, z):
    if self.precond is None or self.precond.is_identity:
      return z
    return self.local(lambda p, v: p.noise(v))(self.precond, z)

  def MMt(self, g):
    if self.precond is None or self.precond.is_identity:
      return g
    return self.local(lambda p, v: p.drift(v))(self.precond, g)

  @property
  def marginal(self):
    return self.precond is not None and self.mode == 'marginal'

  def batch_mean(self, v):
    """Global mean of per-sample values (B,) -> scalar, or (B,) itself for 'sample'."""
    if self.corrector_norm == 'sample':
      return v
    return jnp.mean(self.replicate(v))


def _vp_like(sde):
  return isinstance(sde, (sde_lib.VPSDE, sde_lib.subVPSDE))


# ----------------------------------------------------------------------------- predictors
# Signature: fn(ctx, x, t, i, keys) -> (x, x_mean); x (B,...), t (B,), i int32 scalar
# (ascending discrete index: N-1 at t=T, 0 at t=eps), keys (B,) per-sample step keys.


@register_predictor('none', nfe=0)
def none_predictor(ctx, x, t, i, keys):
  del ctx, t, i, keys
  return x, x


def _split_reverse(ctx, f, G2, score, x):
  """Marginal-preserving reverse drift (per unit step): f - 1/2 G^2 s - 1/2 eta G^2 MM^T s."""
  return f - 0.5 * G2 * score - 0.5 * ctx.eta * G2 * ctx.MMt(score)


@register_predictor('euler_maruyama')
def euler_maruyama(ctx, x, t, i, keys):
  """x_mean = x - drift_rev dt, x = x_mean + g sqrt(dt) z (reverse SDE, Song et al. Eq. 6)."""
  del i
  dt = -1. / ctx.N
  z = ctx.noise(keys, 0)
  score = ctx.score_fn(x, t)
  if ctx.marginal and not ctx.probability_flow:
    f, g = ctx.sde.sde(x, t)
    drift = _split_reverse(ctx, f, _bcast(g ** 2, x), score, x)
    x_mean = x + drift * dt
    return x_mean + _bcast(g * jnp.sqrt(-dt) * jnp.sqrt(ctx.eta), x) * ctx.M(z), x_mean
  drift, g = ctx.sde.reverse(ctx.score_fn, ctx.probability_flow).sde(x, t, score=score)
  x_mean = x + ctx.MMt(drift) * dt
  return x_mean + _bcast(g * jnp.sqrt(-dt), x) * ctx.M(z), x_mean


@register_predictor('reverse_diffusion')
def reverse_diffusion(ctx, x, t, i, keys):
  """x_mean = x - MM^T rev_f, x = x_mean + G M z (PDS Alg. 1 with the discretised SDE)."""
  z = ctx.noise(keys, 0)
  score = ctx.score_fn(x, t)
  if ctx.marginal and not ctx.probability_flow:
    f, G = ctx.sde.discretize(x, t, i)
    x_mean = x - _split_reverse(ctx, f, _bcast(G ** 2, x), score, x)
    return x_mean + _bcast(G * jnp.sqrt(ctx.eta), x) * ctx.M(z), x_mean
  rev_f, G = ctx.sde.reverse(ctx.score_fn, ctx.probability_flow).discretize(x, t, i, score=score)
  x_mean = x - ctx.MMt(rev_f)
  return x_mean + _bcast(G, x) * ctx.M(z), x_mean


@register_predictor('ancestral_sampling')
def ancestral_sampling(ctx, x, t, i, keys):
  """Ancestral sampling of SMLD (VE) / DDPM (VP) (Song et al. App. F); not preconditioned."""
  sde = ctx.sde
  z = ctx.noise(keys, 0)
  score = ctx.score_fn(x, t)
  if isinstance(sde, sde_lib.VESDE):
    sigmas = sde.discrete_sigmas
    sigma = sigmas[i]
    adjacent = jnp.where(i == 0, 0., sigmas[jnp.maximum(i - 1, 0)])
    x_mean = x + score * (sigma ** 2 - adjacent ** 2)
    std = jnp.sqrt(adjacent ** 2 * (sigma ** 2 - adjacent ** 2) / sigma ** 2)
    return x_mean + std * z, x_mean
  if _vp_like(sde):
    beta = sde.discrete_betas[i]
    x_mean = (x + beta * score) / jnp.sqrt(1. - beta)
    return x_mean + jnp.sqrt(beta) * z, x_mean
  raise NotImplementedError(f'ancestral_sampling does not support {type(sde).__name__}')


# ----------------------------------------------------------------------------- correctors


def _langevin_alpha(ctx, i):
  """alpha_i of the snr rule: 1 for VE, the DDPM alpha_i for VP/subVP (score_sde)."""
  return ctx.sde.alphas[i] if _vp_like(ctx.sde) else jnp.ones(())


@register_corrector('none', nfe=0)
def none_corrector(ctx, x, t, i, keys):
  del ctx, t, i, keys
  return x, x


@register_corrector('langevin')
def langevin(ctx, x, t, i, keys):
  """Langevin corrector with the snr step size (Song et al. Alg. 4; PDS Alg. 1):
  g = MM^T s, n = M z, eps = 2 alpha_i (snr |n| / |g|)^2, x <- x + eps g + sqrt(2 eps) n,
  |.| the per-sample L2 norm averaged over the global batch (or per sample)."""
  alpha = _langevin_alpha(ctx, i)

  def step(j, carry):
    x, _ = carry
    g = ctx.MMt(ctx.score_fn(x, t))
    n = ctx.M(ctx.noise(keys, j + 1))
    g_norm = ctx.batch_mean(_norms(g))
    n_norm = ctx.batch_mean(_norms(n))
    eps = _bcast(2. * alpha * (ctx.snr * n_norm / g_norm) ** 2, x)
    x_mean = x + eps * g
    return x_mean + jnp.sqrt(2. * eps) * n, x_mean

  return jax.lax.fori_loop(0, ctx.n_steps, step, (x, x))


@register_corrector('ald')
def annealed_langevin(ctx, x, t, i, keys):
  """Annealed Langevin dynamics of NCSN (Song & Ermon 2019; PDS Eq. 2 preconditioned):
  eps = 2 alpha_i (snr sigma_t)^2, x <- x + eps MM^T s + sqrt(2 eps) M z."""
  alpha = _langevin_alpha(ctx, i)
  std = ctx.sde.marginal_prob(x, t)[1]

  def step(j, carry):
    x, _ = carry
    g = ctx.MMt(ctx.score_fn(x, t))
    n = ctx.M(ctx.noise(keys, j + 1))
    eps = _bcast(2. * alpha * (ctx.snr * std) ** 2, x)
    x_mean = x + eps * g
    return x_mean + jnp.sqrt(2. * eps) * n, x_mean

  return jax.lax.fori_loop(0, ctx.n_steps, step, (x, x))


# ----------------------------------------------------------------------------- helpers


def _data_mesh():
  devices = np.asarray(jax.devices())
  return jax.sharding.Mesh(devices, ('data',))


def _no_local(fn, in_specs=None):
  del in_specs
  return fn


def _sharders(batch_size: int):
  """(shard, replicate, local) functions for a (B,...) batch over all devices on axis 'data'.

  local(fn)(p, v): fn(p, v) run per device on its (B/n,...) shard of v with p
  replicated (shard_map); the SPMD partitioners all-gather FFT operands and compute
  every FFT on the whole batch on every device, so batch-local FFT work goes through it.
  """
  n = jax.device_count()
  if n == 1:
    ident = lambda v: v
    return ident, ident, _no_local
  if batch_size % n:
    raise ValueError(f'batch size {batch_size} (config.sampling.batch_size) must be divisible '
                     f'by the number of devices {n}.')
  mesh = _data_mesh()
  spec_b = NamedSharding(mesh, PartitionSpec('data'))
  spec_r = NamedSharding(mesh, PartitionSpec())
  shard = lambda v: jax.lax.with_sharding_constraint(v, spec_b)
  replicate = lambda v: jax.lax.with_sharding_constraint(v, spec_r)
  local = lambda fn, in_specs=(PartitionSpec(), PartitionSpec('data')): jax.shard_map(
      fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec('data'))
  return shard, replicate, local


def sample_keys(rng, offset, batch_size):
  """Per-sample keys fold_in(rng, offset + b), b < batch_size -> (B,) keys."""
  idx = jnp.asarray(offset, jnp.uint32) + jnp.arange(batch_size, dtype=jnp.uint32)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, idx)


def _normal_fn(shape):
  def noise(keys, tag):
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, tag), shape[1:]))(keys)
  return noise


def _prior_std(sde, channels=None):
  """sigma_max (VE), 1 (VP/subVP); for the stacked phase-space state of CLD/PSLD the
  per-channel [1]*C + [sqrt(M)]*C (`channels` = 2C, the state's last axis)."""
  if getattr(sde, 'is_augmented', False):
    if channels is None:
      raise NotImplementedError(
          f'this sampler does not support the phase-space SDE {type(sde).__name__}; use '
          "config.sampling.method='conjugate' or 'splitting' (score_sde_pds.integrators).")
    return sde.prior_std(channels)
  return sde.sigma_max if isinstance(sde, sde_lib.VESDE) else 1.


def _all_finite(x):
  return jnp.all(jnp.isfinite(x))


# ----------------------------------------------------------------------------- PC sampler


class Sampler:
  """A sampler bound to its settings. `sampler(rng, score_fn, offset=0) -> (samples, nfe)`.

  `run(rng, score_fn, precond, offset)` is the traceable body returning
  (samples, nfe, info) with info['first_nonfinite_step'] (-1 when all finite);
  `jitted(score_fn)` returns jit(run) for that score function.
  """

  def __init__(self, run_fn, preconditioner=None):
    self.run = run_fn
    self.preconditioner = preconditioner
    self._cache = {}

  def jitted(self, score_fn):
    fn = self._cache.get(score_fn)
    if fn is None:
      fn = jax.jit(functools.partial(self.run, score_fn=score_fn))
      self._cache[score_fn] = fn
    return fn

  def __call__(self, rng, score_fn, offset=0, preconditioner=None):
    p = self.preconditioner if preconditioner is None else preconditioner
    samples, nfe, _ = self.jitted(score_fn)(rng, precond=p, offset=offset)
    return samples, nfe


def _check_common(shape, snr, n_steps, eps, sde):
  if len(shape) < 2 or any(int(s) < 1 for s in shape):
    raise ValueError(f'sampling shape must be (B, ...) with positive sizes, got {shape}.')
  if not np.isfinite(snr) or snr <= 0:
    raise ValueError(f'config.sampling.snr must be > 0, got {snr!r}.')
  if int(n_steps) < 1:
    raise ValueError(f'config.sampling.n_steps_each must be >= 1, got {n_steps!r}.')
  if not 0 < eps < sde.T:
    raise ValueError(f'sampling eps must lie in (0, T={sde.T}), got {eps!r}.')


def get_pc_sampler(sde, shape, predictor, corrector, *, snr, n_steps=1,
                   probability_flow=False, denoise=True, eps=1e-3, preconditioner=None,
                   pds_mode='reference', eta=1.0, corrector_norm='batch',
                   progress_every=0, progress_fn=None, noise_source=None) -> Sampler:
  """Predictor-corrector sampler (Song et al. 2021, Alg. 1-4; PDS Alg. 1).

  Args:
    sde: an sde_lib SDE (its N is the number of steps).
    shape: (B, H, W, C) global batch shape.
    predictor, corrector: registry names (or None for 'none').
    snr: signal-to-noise ratio of the Langevin step-size rule (> 0).
    n_steps: corrector steps per noise level (score_sde's n_steps_each).
    probability_flow: predictor follows the probability-flow ODE drift.
    denoise: return the last x_mean (score_sde's noise_removal).
    eps: smallest time; steps use t = linspace(T, eps, N).
    preconditioner: default Preconditioner (None = vanilla); may be overridden per call.
    pds_mode: 'reference' (fudan-zvg/PDS) or 'marginal'. eta: marginal-mode weight.
    corrector_norm: 'batch' (global batch-mean norms, score_sde) or 'sample'.
    progress_every: progress reports every k steps (k > 0), about every 5 % of the steps
      (-1, auto) or none (0, default); see `_progress_interval`. With reports on, the
      steps run as ceil(N / k) chunks with an unordered host callback
      progress_fn(step) at 0, k, 2k, ..., N (the samples are the same bit for bit).
    progress_fn: host function of the step count; default a `ProgressBar` (tqdm; with
      -1 shown only once a run has taken 2 s).
    noise_source: optional noise_source(k, tag) -> (B,H,W,C) replacing the per-sample
      Gaussian draws, to replay recorded noise (k = -1: prior; k = step; tag 0:
      predictor, j + 1: corrector sub-step j).
  Returns:
    a `Sampler`: sampler(rng, score_fn, offset=0) -> (samples (B,H,W,C), nfe int).
  """
  pred_name = _lookup(PREDICTORS, predictor, 'config.sampling.predictor')
  corr_name = _lookup(CORRECTORS, corrector, 'config.sampling.corrector')
  if pds_mode not in ('reference', 'marginal'):
    raise ValueError(f"config.sampling.pds.mode={pds_mode!r}; valid: ['marginal', 'reference'].")
  if corrector_norm not in ('batch', 'sample'):
    raise ValueError(f"config.sampling.corrector_norm={corrector_norm!r}; valid: ['batch', 'sample'].")
  if not eta >= 0:
    raise ValueError(f'config.sampling.pds.eta must be >= 0, got {eta!r}.')
  _check_common(shape, snr, n_steps, eps, sde)
  predictor_fn, corrector_fn = PREDICTORS[pred_name], CORRECTORS[corr_name]
  N = sde.N
  shape = tuple(int(s) for s in shape)
  nfe = N * (_PREDICTOR_NFE[pred_name] + _CORRECTOR_NFE[corr_name] * int(n_steps))
  shard, replicate, local = _sharders(shape[0])
  noise = _normal_fn(shape)
  interval = _progress_interval(progress_every, N)
  if interval and progress_fn is None:
    progress_fn = ProgressBar(N, delay=2. if progress_every == -1 else 0.)

  def _report(step, dep):
    # unordered host callback: no token threading, the device never waits for the host
    jax.debug.callback(lambda s, _: progress_fn(s), step, dep[(0,) * dep.ndim])

  def run(rng, score_fn, precond=None, offset=0):
    if local is not _no_local:
      score_fn = local(score_fn, (PartitionSpec('data'), PartitionSpec('data')))
    ctx = StepContext(sde=sde, score_fn=score_fn, precond=precond, mode=pds_mode, eta=eta,
                      probability_flow=probability_flow, snr=snr, n_steps=int(n_steps),
                      corrector_norm=corrector_norm, N=N, noise=noise, replicate=replicate,
                      local=local)
    keys = shard(sample_keys(rng, offset, shape[0]))
    z = noise(keys, 0) if noise_source is None else noise_source(-1, 0)
    prior = ctx.M(z) if not ctx.marginal else z
    x = shard(prior * _prior_std(sde, shape[-1]))
    timesteps = jnp.linspace(sde.T, eps, N)

    def step(k, carry):
      x, x_mean, bad = carry
      t = jnp.full((shape[0],), timesteps[k], x.dtype)
      i = N - 1 - k
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, k + 1)
      sctx = ctx if noise_source is None else dataclasses.replace(
          ctx, noise=lambda _, tag: noise_source(k, tag))
      x, x_mean = corrector_fn(sctx, x, t, i, step_keys)
      x, x_mean = predictor_fn(sctx, x, t, i, step_keys)
      x, x_mean = shard(x), shard(x_mean)
      bad = jnp.where((bad < 0) & ~_all_finite(x), k, bad)
      return x, x_mean, bad

    init = (x, x, jnp.asarray(-1, jnp.int32))
    if not interval:
      (x, x_mean, bad), _ = jax.lax.scan(lambda c, k: (step(k, c), None), init,
                                         jnp.arange(N, dtype=jnp.int32))
    else:
      # ceil(N / interval) chunks, each a fori_loop of the same step function (so the
      # samples are bit-identical to the plain scan's), reporting its first step index at
      # its start; N is reported after the loop. The reports take a scalar of the state as
      # a dummy argument: that data dependency orders them 0, k, 2k, ..., N.
      def chunk(carry, c):
        lo = c * interval
        _report(lo, carry[0])
        return jax.lax.fori_loop(lo, jnp.minimum(lo + interval, N), step, carry), None

      (x, x_mean, bad), _ = jax.lax.scan(chunk, init,
                                         jnp.arange(-(-N // interval), dtype=jnp.int32))
      _report(jnp.int32(N), x_mean)
    out = x_mean if denoise else x
    return out, nfe, {'first_nonfinite_step': bad}

  return Sampler(run, preconditioner)


# ----------------------------------------------------------------------------- ODE sampler

# config.sampling.ode_method -> diffrax solver class ('rk45' is scipy's name for dopri5).
ODE_SOLVERS: dict[str, Callable] = {
    'dopri5': diffrax.Dopri5, 'rk45': diffrax.Dopri5, 'tsit5': diffrax.Tsit5,
    'heun': diffrax.Heun, 'euler': diffrax.Euler}
# Score evaluations of one step, and whether the last one is reused as the next step's
# first (FSAL: diffrax then evaluates the first stage once, in the first step).
_ODE_STAGES = {diffrax.Dopri5: (6, True), diffrax.Tsit5: (6, True), diffrax.Heun: (2, False),
               diffrax.Euler: (1, False)}
ODE_STEP_CONTROL = ('sample', 'batch')


def _per_sample_rms_max(err):
  """Error norm of a batched solve: the largest per-sample RMS, (B,...) -> scalar."""
  return jnp.max(jnp.sqrt(jnp.mean(jnp.square(err.reshape(err.shape[0], -1)), axis=-1)))


def get_ode_sampler(sde, shape, *, rtol=1e-5, atol=1e-5, method='dopri5', eps=1e-3,
                    denoise=False, max_steps=10000, steps=0, step_control='sample') -> Sampler:
  """Probability-flow ODE sampler (Song et al. Eq. 13) solved with diffrax from t=T to eps.

  Args:
    sde: an sde_lib SDE. shape: (B, H, W, C) global batch shape.
    rtol, atol: tolerances of the adaptive PID controller (config.sampling.ode_rtol/atol);
      the error norm is the RMS of err / (atol + rtol max(|y|, |y_new|)), as scipy's RK45.
    method: config.sampling.ode_method, a key of ODE_SOLVERS ('dopri5' = 'RK45' and
      'tsit5' are adaptive 5th order, 'heun' 2nd, 'euler' 1st order and fixed-step only).
    eps: the final time.
    denoise: one reverse-diffusion step at eps afterwards, as score_sde's ODE sampler.
    max_steps: bound on attempted steps (accepted + rejected) of an adaptive solve.
    steps: config.sampling.ode_steps; 0 = adaptive steps, starting from dt = (T - eps)/100,
      n > 0 = n uniform steps in t from T to eps (t_k = linspace(T, eps, n + 1)).
    step_control: 'sample' vmaps diffeqsolve over the batch, so every sample has its own
      step size and sample k does not depend on the batch; 'batch' is one solve of the
      whole batch with a shared step, accepted when every sample's error norm is <= 1
      (the same per-sample tolerance). Fixed steps are always one batched solve.
  Returns:
    a `Sampler`. Its run(rng, score_fn, precond=None, offset=0) returns (samples
    (B,H,W,C), nfe, info): nfe is the number of batched score evaluations, i.e.
    stages * steps (+1 for the first stage of FSAL solvers, +1 for denoise) where an
    adaptive solve takes as many steps as its slowest sample; info['nfe_per_sample']
    (B,) counts each sample's own steps, info['steps'] the batched steps, and
    info['first_nonfinite_step'] is -1 when every solve succeeded with finite samples,
    else the batched step count at which it stopped.
  """
  name = _lookup(ODE_SOLVERS, method, 'config.sampling.ode_method')
  solver_cls = ODE_SOLVERS[name]
  per_step, fsal = _ODE_STAGES[solver_cls]
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
    raise ValueError(f'config.sampling.ode_steps must be an integer >= 0 (0 = adaptive), '
                     f'got {steps!r}.')
  steps = int(steps)
  if not (np.isfinite(rtol) and np.isfinite(atol) and rtol > 0 and atol > 0):
    raise ValueError(f'config.sampling.ode_rtol and config.sampling.ode_atol must be finite '
                     f'and > 0, got rtol={rtol!r}, atol={atol!r}.')
  if steps == 0 and solver_cls is diffrax.Euler:
    raise ValueError(f"config.sampling.ode_method={method!r} has no error estimate for "
                     f"adaptive steps: set config.sampling.ode_steps > 0.")
  if int(max_steps) < 1:
    raise ValueError(f'ODE max_steps must be >= 1, got {max_steps!r}.')
  if step_control not in ODE_STEP_CONTROL:
    raise ValueError(f'ODE step_control={step_control!r}; valid: {list(ODE_STEP_CONTROL)}.')
  _check_common(shape, 1., 1, eps, sde)
  shape = tuple(int(s) for s in shape)
  B = shape[0]
  shard, _, local = _sharders(B)
  noise = _normal_fn(shape)
  T = float(sde.T)
  if steps:
    controller = diffrax.StepTo(ts=np.linspace(T, eps, steps + 1))
    dt0, max_steps = None, steps
  else:
    norm = {'norm': _per_sample_rms_max} if step_control == 'batch' else {}  # else RMS
    controller = diffrax.PIDController(rtol=rtol, atol=atol, **norm)
    dt0, max_steps = -(T - eps) / 100., int(max_steps)
  vmapped = step_control == 'sample' and not steps

  def solve(drift, y0):
    """diffeqsolve of dy/dt = drift(t, y) from T to eps -> (y(eps), steps, success)."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: drift(t, y)), solver_cls(), T, eps, dt0, y0,
        stepsize_controller=controller, max_steps=max_steps, throw=False)
    return sol.ys[-1], sol.stats['num_steps'], sol.result == diffrax.RESULTS.successful

  def run(rng, score_fn, precond=None, offset=0):
    del precond  # the probability-flow ODE is not preconditioned
    if local is not _no_local:
      score_fn = local(score_fn, (PartitionSpec('data'), PartitionSpec('data')))
    keys = shard(sample_keys(rng, offset, B))
    y0 = shard(noise(keys, 0) * _prior_std(sde))

    def batch_drift(y, t):
      """Probability-flow drift f - 1/2 g^2 s (Eq. 13), y (B,...), t (B,) -> (B,...)."""
      return shard(sde.reverse(score_fn, probability_flow=True).sde(shard(y), t)[0])

    if vmapped:
      # The vmapped solve calls the drift on one sample at a time; custom_vmap hands
      # the whole batch to the score function instead, so the network and its
      # per-device sharding see (B,...) batches exactly as in the PC sampler.
      # custom_vmap functions may not close over tracers (the network params):
      # closure_convert makes them explicit arguments.
      batch_drift_c, consts = jax.closure_convert(batch_drift, y0, jnp.full((B,), T, y0.dtype))

      @jax.custom_batching.custom_vmap
      def sample_drift(t, y, consts):
        """One sample y (...), t () -> (...); only traced, the solve is always vmapped."""
        yb = jnp.broadcast_to(y, (B,) + y.shape)
        return batch_drift_c(yb, jnp.full((B,), t, y.dtype), *consts)[0]

      @sample_drift.def_vmap
      def _batched_drift(axis_size, in_batched, t, y, consts):
        if axis_size != B or any(jax.tree_util.tree_leaves(in_batched[2])):
          raise NotImplementedError('the ODE sampler is vmapped over its own batch only')
        t = t if in_batched[0] else jnp.broadcast_to(t, (B,))
        y = y if in_batched[1] else jnp.broadcast_to(y, (B,) + y.shape)
        return batch_drift_c(y, t, *consts), True

      drift = lambda t, y: sample_drift(t, y, consts)
      y, n_steps, ok = jax.vmap(functools.partial(solve, drift))(y0)
    else:
      y, n_steps, ok = solve(lambda t, y: batch_drift(y, jnp.full((B,), t, y.dtype)), y0)
      n_steps, ok = jnp.full((B,), n_steps), jnp.full((B,), ok)
    iters = jnp.max(n_steps).astype(jnp.int32)
    nfe_s = (per_step * n_steps + int(fsal)).astype(jnp.int32)
    nfe = per_step * iters + int(fsal)
    if denoise:
      rev = sde.reverse(score_fn, probability_flow=False)
      rev_f, _ = rev.discretize(y, jnp.full((B,), eps, y.dtype), jnp.asarray(0, jnp.int32))
      y = shard(y - rev_f)
      nfe, nfe_s = nfe + 1, nfe_s + 1
    bad = jnp.where(_all_finite(y) & jnp.all(ok), -1, iters)
    return y, nfe, {'first_nonfinite_step': bad, 'nfe_per_sample': nfe_s, 'steps': iters}

  return Sampler(run)


# ----------------------------------------------------------------------------- config API


def get_sampler_from_config(config, sde, shape, eps, preconditioner=None) -> Sampler:
  """The sampler that config.sampling describes (method 'pc', 'ode', 'conjugate' or
  'splitting'; the last two and every CLD/PSLD config go to score_sde_pds.integrators)."""
  s = config.sampling
  method = str(s.method).lower()
  if method in ('conjugate', 'splitting') or getattr(sde, 'is_augmented', False):
    from score_sde_pds.integrators import config as integrators_config  # imports sampling
    return integrators_config.get_sampler_from_config(config, sde, shape, eps, preconditioner)
  if method == 'pc':
    pds = s.get('pds', None)
    return get_pc_sampler(
        sde, shape, s.predictor, s.corrector, snr=float(s.snr), n_steps=int(s.n_steps_each),
        probability_flow=bool(s.probability_flow), denoise=bool(s.noise_removal), eps=eps,
        preconditioner=preconditioner,
        pds_mode=str(pds.mode) if pds is not None else 'reference',
        eta=float(pds.eta) if pds is not None else 1.,
        corrector_norm=str(s.get('corrector_norm', 'batch')),
        progress_every=s.get('progress_every', -1))
  if method == 'ode':
    return get_ode_sampler(sde, shape, rtol=float(s.get('ode_rtol', 1e-5)),
                           atol=float(s.get('ode_atol', 1e-5)),
                           method=str(s.get('ode_method', 'dopri5')), eps=eps,
                           denoise=bool(s.noise_removal), steps=s.get('ode_steps', 0))
  raise ValueError(f"config.sampling.method={s.method!r} is not known; valid: "
                   "['conjugate', 'ode', 'pc', 'splitting'].")


def _progress_interval(progress_every, n_steps):
  """Steps between progress reports for config.sampling.progress_every: 0 -> 0 (off),
  k > 0 -> min(k, n_steps), -1 (auto) -> ceil(n_steps / 20), about every 5 % of the steps."""
  if (isinstance(progress_every, (bool, np.bool_))
      or not isinstance(progress_every, (int, np.integer)) or progress_every < -1):
    raise ValueError('config.sampling.progress_every must be an integer: -1 (auto, about '
                     f'every 5 % of the steps), 0 (off) or k > 0 (every k steps); got '
                     f'{progress_every!r}.')
  if progress_every == -1:
    return -(-int(n_steps) // 20)
  return min(int(progress_every), int(n_steps))


class ProgressBar:
  """Host side of the PC sampler's progress reports: a tqdm bar per sampling run.

  Called with the number of finished steps (0, k, ..., total) from the sampler's
  in-loop callback; 0 (or the first report) opens a bar, `total` closes it. tqdm's
  `delay` hides the bar of runs shorter than that many seconds.
  """

  def __init__(self, total, desc='sampling', delay=2., **tqdm_kwargs):
    self.total, self.desc, self.delay, self.kwargs = int(total), desc, delay, tqdm_kwargs
    self._bar = None

  def __call__(self, step):
    import tqdm  # host-only dependency, imported on first report
    step = int(step)
    if self._bar is None or step == 0:
      self.close()
      self._bar = tqdm.tqdm(total=self.total, initial=step, desc=self.desc, delay=self.delay,
                            unit='step', **self.kwargs)
    else:
      self._bar.update(step - self._bar.n)
    if step >= self.total:
      self.close()

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def get_sampling_fn(config, sde, model, shape, eps, inverse_scaler=None, preconditioner=None):
  """Config-driven sampler whose jitted function takes the network params as arguments.

  Returns sampling_fn(rng, params, states, offset=0) -> (samples, nfe), samples mapped
  through `inverse_scaler` (identity by default). `sampling_fn.with_info(...)` also
  returns the info dict, and `sampling_fn.preconditioner` the PDS operator in use.
  """
  from score_sde_pds.models import utils as mutils
  sampler = get_sampler_from_config(config, sde, shape, eps, preconditioner)
  inverse_scaler = inverse_scaler or (lambda v: v)
  continuous = bool(config.training.continuous)
  num_scales = int(config.model.num_scales)

  def body(rng, params, states, precond, offset):
    score_fn = mutils.get_score_fn(sde, model, params, states, train=False,
                                   continuous=continuous, num_scales=num_scales)
    x, nfe, info = sampler.run(rng, score_fn, precond=precond, offset=offset)
    return inverse_scaler(x), nfe, info

  jitted = jax.jit(body)

  def with_info(rng, params, states, offset=0, preconditioner=None):
    p = sampler.preconditioner if preconditioner is None else preconditioner
    return jitted(rng, params, states, p, offset)

  def sampling_fn(rng, params, states, offset=0, preconditioner=None):
    x, nfe, _ = with_info(rng, params, states, offset, preconditioner)
    return x, nfe

  sampling_fn.with_info = with_info
  sampling_fn.preconditioner = sampler.preconditioner
  sampling_fn.sampler = sampler
  sampling_fn.jitted = jitted
  return sampling_fn

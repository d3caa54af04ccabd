"""Training objectives, optimizer and the pure training step (score_sde conventions).

Denoising score matching (Song et al. 2021, Eq. 7):

  theta* = argmin_theta E_t { lambda(t) E_{x(0)} E_{x(t)|x(0)}
             [ || s_theta(x(t), t) - grad_{x(t)} log p_0t(x(t) | x(0)) ||^2 ] },

with t ~ U(eps, T) and the Gaussian perturbation kernel of the linear SDE,
x(t) = mean(t) x(0) + std(t) z, z ~ N(0, I), whose score is -z / std(t). score_sde's
weighting lambda(t) = std(t)^2 turns the per-sample term into || std s + z ||^2; the
likelihood weighting lambda(t) = g(t)^2 (Song, Durkan et al. 2021) keeps
g^2 || s + z / std ||^2. The per-sample reduction is the mean over pixels
(`reduce_mean`) or 1/2 their sum; the loss is the mean over the batch.

The discrete objectives of SMLD (NCSN, VE) and DDPM (VP) are kept for discrete models
(`training.continuous=False`).

Everything here is pure: losses take (rng, params, model_state, batch) and the step
function takes (state, batch, rng). Shapes: batch (B, H, W, C) in model space (data
already passed through `datasets.get_data_scaler`), t (B,), losses (B,) -> scalar.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from score_sde_pds import sde_lib
from score_sde_pds.models import utils as mutils


def _bcast(v, x):
  """(B,) -> (B, 1, ..., 1) broadcasting against x of shape (B, ...)."""
  return jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


def _reduce_op(reduce_mean: bool) -> Callable:
  """Per-sample reduction over the flattened data axes: mean, or 1/2 sum (score_sde)."""
  if reduce_mean:
    return lambda v: jnp.mean(v, axis=-1)
  return lambda v: 0.5 * jnp.sum(v, axis=-1)


def _images(batch):
  """Accepts a (B, H, W, C) array or a dict with an 'image' entry (score_sde batches)."""
  if isinstance(batch, dict):
    return batch['image']
  return batch


def loss_rngs(rng):
  """The three keys a loss draws from: (t or label key, noise key, model/dropout key).

  Exposed so that tests can reproduce the noise of a loss evaluation exactly.
  """
  t_rng, z_rng, model_rng = jax.random.split(rng, 3)
  return t_rng, z_rng, model_rng


# ----------------------------------------------------------------------------- losses


def dsm_loss(score, z, std, reduce_mean: bool = False, likelihood_weighting: bool = False,
             g2=None):
  """Per-batch denoising score matching loss from a score evaluation (Song et al. 2021, Eq. 7).

  Args:
    score: (B, ...) s_theta(x(t), t) at x(t) = mean + std z.
    z: (B, ...) the standard normal noise used to perturb the data.
    std: (B,) std(t) of the perturbation kernel.
    reduce_mean: mean over data dimensions (True) or 1/2 their sum (False).
    likelihood_weighting: lambda(t) = g(t)^2 instead of std(t)^2.
    g2: (B,) g(t)^2, required with likelihood_weighting.
  Returns:
    (loss scalar, per-sample losses (B,)).
  """
  reduce_op = _reduce_op(reduce_mean)
  if not likelihood_weighting:
    # lambda = std^2: std^2 || s + z / std ||^2 = || std s + z ||^2.
    res = jnp.square(score * _bcast(std, score) + z)
    losses = reduce_op(res.reshape(res.shape[0], -1))
  else:
    # lambda = g^2 (likelihood weighting).
    res = jnp.square(score + z / _bcast(std, z))
    losses = reduce_op(res.reshape(res.shape[0], -1)) * g2
  return jnp.mean(losses), losses


def get_sde_loss_fn(sde, model, train: bool, reduce_mean: bool = True,
                    continuous: bool = True, likelihood_weighting: bool = True,
                    eps: float = 1e-5, num_scales: int | None = None) -> Callable:
  """Continuous-time DSM loss for any SDE of `sde_lib` (Song et al. 2021, Eq. 7).

  Args:
    sde: an `sde_lib` SDE (VESDE, VPSDE, subVPSDE).
    model: the flax module (see `models.utils.get_score_fn` for the label conventions).
    train: training mode (dropout on, using the model key of `loss_rngs`).
    reduce_mean: per-sample mean over data dimensions instead of 1/2 the sum.
    continuous: the network takes continuous labels (sigma(t) for VE, 999 t for VP);
      with False the discrete label of `get_score_fn` is used.
    likelihood_weighting: lambda(t) = g(t)^2 instead of std(t)^2.
    eps: smallest t; t ~ U(eps, T).
    num_scales: N of a discrete model's labels (default sde.N).
  Returns:
    loss_fn(rng, params, model_state, batch) -> (loss scalar, new model_state), with
    batch (B, H, W, C) and the keys of `loss_rngs(rng)` drawing t (B,) and z (B,H,W,C).
  """

  def loss_fn(rng, params, states, batch):
    x0 = _images(batch)
    t_rng, z_rng, model_rng = loss_rngs(rng)
    t = jax.random.uniform(t_rng, (x0.shape[0],), minval=eps, maxval=sde.T)
    z = jax.random.normal(z_rng, x0.shape, x0.dtype)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + _bcast(std, x0) * z
    score_fn = mutils.get_score_fn(sde, model, params, states, train=train,
                                   continuous=continuous, num_scales=num_scales)
    score = score_fn(xt, t, rng=model_rng)
    g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2 if likelihood_weighting else None
    loss, _ = dsm_loss(score, z, std, reduce_mean, likelihood_weighting, g2)
    return loss, states

  return loss_fn


def get_smld_loss_fn(vesde, model, train: bool, reduce_mean: bool = False) -> Callable:
  """Discrete SMLD (NCSN) loss: label i ~ U{0..N-1} into the descending sigmas,
  sigma_i^2 || s_theta(x + sigma_i z, i) + z / sigma_i ||^2 (Song et al. 2021, Eq. 1).

  Returns loss_fn(rng, params, model_state, batch) -> (loss, model_state).
  """
  if not isinstance(vesde, sde_lib.VESDE):
    raise ValueError('SMLD (discrete) training needs a VESDE (config.training.sde=vesde).')
  reduce_op = _reduce_op(reduce_mean)

  def loss_fn(rng, params, states, batch):
    x0 = _images(batch)
    label_rng, z_rng, model_rng = loss_rngs(rng)
    sigmas_desc = vesde.discrete_sigmas[::-1]
    labels = jax.random.randint(label_rng, (x0.shape[0],), 0, vesde.N)
    sigmas = sigmas_desc[labels]
    noise = jax.random.normal(z_rng, x0.shape, x0.dtype) * _bcast(sigmas, x0)
    model_fn = mutils.get_model_fn(model, params, states, train=train)
    score = model_fn(x0 + noise, labels, model_rng)
    target = -noise / _bcast(sigmas ** 2, x0)
    res = jnp.square(score - target)
    losses = reduce_op(res.reshape(res.shape[0], -1)) * sigmas ** 2
    return jnp.mean(losses), states

  return loss_fn


def get_ddpm_loss_fn(vpsde, model, train: bool, reduce_mean: bool = True) -> Callable:
  """Discrete DDPM loss: label i ~ U{0..N-1},
  || eps_theta(sqrt(abar_i) x + sqrt(1 - abar_i) z, i) - z ||^2 (Ho et al. 2020, Eq. 14;
  Song et al. 2021, Eq. 3 with lambda = 1 - abar_i).

  Returns loss_fn(rng, params, model_state, batch) -> (loss, model_state).
  """
  if not isinstance(vpsde, sde_lib.VPSDE):
    raise ValueError('DDPM (discrete) training needs a VPSDE (config.training.sde=vpsde).')
  reduce_op = _reduce_op(reduce_mean)

  def loss_fn(rng, params, states, batch):
    x0 = _images(batch)
    label_rng, z_rng, model_rng = loss_rngs(rng)
    alphas_cumprod = jnp.cumprod(1. - vpsde.discrete_betas)
    labels = jax.random.randint(label_rng, (x0.shape[0],), 0, vpsde.N)
    z = jax.random.normal(z_rng, x0.shape, x0.dtype)
    xt = (_bcast(jnp.sqrt(alphas_cumprod[labels]), x0) * x0
          + _bcast(jnp.sqrt(1. - alphas_cumprod[labels]), x0) * z)
    model_fn = mutils.get_model_fn(model, params, states, train=train)
    out = model_fn(xt, labels, model_rng)
    res = jnp.square(out - z)
    losses = reduce_op(res.reshape(res.shape[0], -1))
    return jnp.mean(losses), states

  return loss_fn


# ----------------------------------------------------------------------------- phase space


def hsm_losses(sde, eps_fn, x0, t, noise, reduce_mean: bool = True, rng=None):
  """Per-sample hybrid score matching losses of a phase-space SDE (CLD, PSLD).

  Hybrid score matching (Dockhorn et al. 2022, Eq. 17; Pandey & Mandt 2023, Sec. 4)
  marginalises the initial momentum m_0 ~ N(0, kappa M) instead of sampling it: the kernel
  p(z_t | x_0) is N(Psi_t [x_0; 0], Sigma_t) with Sigma_0 = diag(0, kappa M) (sde_lib's
  init_cov_block), so
    z_t = Psi_t [x_0; 0] + L_t eps,   eps ~ N(0, I_2C),   Sigma_t = L_t L_t^T (lower).
  Its conditional score is -L_t^{-T} eps; with s_theta = -L_t^{-T} eps_theta and the
  weighting lambda(t) = L_t L_t^T (CLD's lambda(t) = ell_t^2, PSLD's 'fid' weighting) the
  objective is the epsilon regression || eps_theta(z_t, t) - eps ||^2, over all 2C channels,
  or over the momentum part eps_m when the network predicts only that (CLD: the data score
  never enters the sampler because x receives no noise).

  Args:
    sde: a phase-space SDE of sde_lib (sde.is_augmented).
    eps_fn: eps_fn(z, t, rng) -> (B,H,W,2C) or (B,H,W,C) (models.utils.get_eps_fn).
    x0: (B,H,W,C) data. t: (B,) times. noise: (B,H,W,2C) standard normal eps.
    reduce_mean: per-sample mean over the regressed entries, else 1/2 their sum.
    rng: the model (dropout) key.
  Returns:
    losses (B,).
  """
  C = x0.shape[-1]
  if noise.shape != x0.shape[:-1] + (2 * C,):
    raise ValueError(f'noise must have shape {x0.shape[:-1] + (2 * C,)}, got {noise.shape}.')
  z0 = jnp.concatenate([x0, jnp.zeros_like(x0)], axis=-1)
  zt = (sde_lib.apply_block(sde.transition_block(t), z0)
        + sde_lib.apply_block(sde.chol_block(t), noise))
  pred = eps_fn(zt, t, rng)
  if pred.shape == noise.shape:
    target = noise
  elif pred.shape == x0.shape:
    target = noise[..., C:]                       # momentum-only epsilon
  else:
    raise ValueError(f'the network output has shape {pred.shape}; for data {x0.shape} it must '
                     f'be {noise.shape} (eps of [x; m]) or {x0.shape} (momentum eps).')
  res = jnp.square(pred - target)
  return _reduce_op(reduce_mean)(res.reshape(res.shape[0], -1))


def get_hsm_loss_fn(sde, model, train: bool, reduce_mean: bool = True,
                    eps: float = 1e-5) -> Callable:
  """Hybrid score matching loss of a CLD / PSLD model (see `hsm_losses`).

  t ~ U(eps, T) (PSLD's train_eps 1e-5), noise eps ~ N(0, I) of the stacked state.
  Returns loss_fn(rng, params, model_state, batch) -> (loss scalar, model_state), batch
  (B,H,W,C) data (centered); the keys of `loss_rngs(rng)` draw t (B,) and eps (B,H,W,2C).
  """
  if not getattr(sde, 'is_augmented', False):
    raise ValueError(f'hybrid score matching needs a phase-space SDE (config.training.sde '
                     f'cld | psld), got {type(sde).__name__}.')

  def loss_fn(rng, params, states, batch):
    x0 = _images(batch)
    t_rng, z_rng, model_rng = loss_rngs(rng)
    t = jax.random.uniform(t_rng, (x0.shape[0],), minval=eps, maxval=sde.T)
    noise = jax.random.normal(z_rng, x0.shape[:-1] + (2 * x0.shape[-1],), x0.dtype)
    eps_fn = mutils.get_eps_fn(sde, model, params, states, train=train)
    losses = hsm_losses(sde, eps_fn, x0, t, noise, reduce_mean, model_rng)
    return jnp.mean(losses), states

  return loss_fn


def get_loss_fn(sde, model, train: bool, reduce_mean: bool = False, continuous: bool = True,
                likelihood_weighting: bool = False, eps: float = 1e-5) -> Callable:
  """score_sde's choice of objective: DSM when continuous, else SMLD (VE) / DDPM (VP);
  hybrid score matching (`get_hsm_loss_fn`) for the phase-space SDEs CLD and PSLD."""
  if getattr(sde, 'is_augmented', False):
    if not continuous:
      raise ValueError(f'config.training.sde={type(sde).__name__} trains continuous-time '
                       'models only: set config.training.continuous=True.')
    if likelihood_weighting:
      raise ValueError('config.training.likelihood_weighting=True is not supported for CLD/PSLD '
                       '(hybrid score matching uses the epsilon weighting lambda = Sigma_t).')
    return get_hsm_loss_fn(sde, model, train, reduce_mean=reduce_mean, eps=eps)
  if continuous:
    return get_sde_loss_fn(sde, model, train, reduce_mean=reduce_mean, continuous=True,
                           likelihood_weighting=likelihood_weighting, eps=eps)
  if likelihood_weighting:
    raise ValueError('config.training.likelihood_weighting=True needs '
                     'config.training.continuous=True (not supported by SMLD/DDPM losses).')
  if isinstance(sde, sde_lib.VESDE):
    return get_smld_loss_fn(sde, model, train, reduce_mean=reduce_mean)
  if isinstance(sde, sde_lib.VPSDE):
    return get_ddpm_loss_fn(sde, model, train, reduce_mean=reduce_mean)
  raise ValueError(f'Discrete training (config.training.continuous=False) is not supported '
                   f'for {type(sde).__name__}; use vesde or vpsde, or continuous=True.')


# ----------------------------------------------------------------------------- optimizer


def get_lr_schedule(config) -> Callable:
  """The learning rate of update k = 0, 1, ...: score_sde's linear warmup, then a decay.

  Warmup: lr_k = lr * min(k / warmup, 1) (update 0 has lr 0, as in score_sde; warmup <= 0
  means none). After it, optim.decay = 'none' keeps lr (score_sde), 'cosine' anneals it to
  lr * optim.final_lr_fraction at update training.n_iters along a half cosine (optax's
  warmup_cosine_decay_schedule, whose linear warmup from 0 equals score_sde's).
  """
  o = config.optim
  lr, warmup = float(o.lr), max(int(o.warmup), 0)
  decay = str(o.get('decay', 'none'))
  if decay == 'none':
    if warmup == 0:
      return lambda count: jnp.asarray(lr, jnp.float32)
    return lambda count: lr * jnp.minimum(jnp.asarray(count, jnp.float32) / warmup, 1.)
  if decay != 'cosine':
    raise ValueError(f"config.optim.decay must be 'none' or 'cosine', got {decay!r}.")
  frac = float(o.get('final_lr_fraction', 0.))
  if not 0. <= frac <= 1.:
    raise ValueError(f'config.optim.final_lr_fraction must lie in [0, 1], got {frac!r}.')
  n_iters = int(config.training.n_iters)
  if n_iters <= warmup:
    raise ValueError(f"config.optim.decay='cosine' needs config.training.n_iters "
                     f'({n_iters}) > config.optim.warmup ({warmup}).')
  return optax.warmup_cosine_decay_schedule(init_value=0., peak_value=lr,
                                            warmup_steps=warmup, decay_steps=n_iters,
                                            end_value=lr * frac)


def get_optimizer(config) -> optax.GradientTransformation:
  """Adam of score_sde as an optax chain.

  global-norm clipping to optim.grad_clip (skipped when grad_clip < 0) -> Adam(beta1,
  beta2=optim.get('beta2', 0.999), eps) with the warmup of `get_lr_schedule` and the
  decoupled weight decay of flax.optim.Adam (p -= lr * weight_decay * p, optax.adamw).
  """
  o = config.optim
  name = str(o.optimizer)
  if name.lower() != 'adam':
    raise ValueError(f"config.optim.optimizer={name!r} is not supported; valid: 'Adam'.")
  schedule = get_lr_schedule(config)
  kwargs = dict(b1=float(o.beta1), b2=float(o.get('beta2', 0.999)), eps=float(o.eps))
  wd = float(o.weight_decay or 0.)
  adam = optax.adamw(schedule, weight_decay=wd, **kwargs) if wd else optax.adam(schedule,
                                                                                **kwargs)
  grad_clip = float(o.grad_clip)
  if grad_clip >= 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
  return adam


# ----------------------------------------------------------------------------- state / step


@flax.struct.dataclass
class State:
  """Training state (every field a pytree leaf or subtree; serialisable with flax).

  step: int32 scalar, number of updates done. params / params_ema: parameter trees
  (params_ema is what sampling uses). opt_state: the optax state. model_state: non-param
  collections ({} for NCSN++). ema_rate: float32 scalar. rng: the run's base PRNG key
  (uint32 (2,)); the step function takes its per-update key as an argument (train_lib
  derives it from rng and step).
  """
  step: Any
  params: Any
  opt_state: Any
  params_ema: Any
  model_state: Any
  ema_rate: Any
  rng: Any


def init_state(params, model_state, optimizer: optax.GradientTransformation,
               ema_rate: float, rng) -> State:
  """A step-0 State; params_ema starts equal to params (score_sde)."""
  return State(step=jnp.asarray(0, jnp.int32), params=params,
               opt_state=optimizer.init(params),
               params_ema=jax.tree.map(jnp.array, params), model_state=model_state,
               ema_rate=jnp.asarray(ema_rate, jnp.float32), rng=rng)


def get_step_fn(sde, model, train: bool, optimizer: optax.GradientTransformation | None = None,
                reduce_mean: bool = False, continuous: bool = True,
                likelihood_weighting: bool = False, eps: float = 1e-5) -> Callable:
  """One pure training (or evaluation) step.

  Args:
    sde, model, reduce_mean, continuous, likelihood_weighting, eps: see `get_loss_fn`.
    train: True: gradient step; False: loss of params_ema, state unchanged.
    optimizer: the optax transformation (`get_optimizer`), needed when train.
  Returns:
    step_fn(state, batch, rng) -> (new_state, loss scalar); batch (B, H, W, C). Training:
    params <- optax update of grad loss(params); params_ema <- ema_rate params_ema +
    (1 - ema_rate) params (new params); step <- step + 1. Under jit with a batch sharded
    over devices the gradient is the global-batch mean (XLA inserts the all-reduce).
  """
  if train and optimizer is None:
    raise ValueError('get_step_fn(train=True) needs an optimizer.')
  loss_fn = get_loss_fn(sde, model, train, reduce_mean=reduce_mean, continuous=continuous,
                        likelihood_weighting=likelihood_weighting, eps=eps)

  def step_fn(state: State, batch, rng):
    if not train:
      loss, _ = loss_fn(rng, state.params_ema, state.model_state, batch)
      return state, loss
    grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    (loss, new_model_state), grads = grad_fn(rng, state.params, state.model_state, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rate = state.ema_rate
    params_ema = jax.tree.map(lambda e, p: e * rate + p * (1. - rate), state.params_ema, params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              params_ema=params_ema, model_state=new_model_state)
    return new_state, loss

  return step_fn


def get_step_fn_from_config(config, sde, model, train: bool,
                            optimizer: optax.GradientTransformation | None = None) -> Callable:
  """`get_step_fn` with config.training.{reduce_mean, continuous, likelihood_weighting}."""
  tr = config.training
  return get_step_fn(sde, model, train, optimizer=optimizer, reduce_mean=bool(tr.reduce_mean),
                     continuous=bool(tr.continuous),
                     likelihood_weighting=bool(tr.likelihood_weighting))

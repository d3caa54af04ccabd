"""Model registry, initialisation and the score function (score_sde conventions).

`init_model` and `get_score_fn` read only `config.model` / `config.data` fields that
score_sde has, so an official config works as it is.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

_MODELS: dict[str, Any] = {}


def register_model(cls=None, *, name=None):
  """Decorator registering a model class (or factory) under `name` (default: class name)."""

  def _register(c):
    local_name = c.__name__ if name is None else name
    if local_name in _MODELS:
      raise ValueError(f'Model name {local_name!r} is already registered.')
    _MODELS[local_name] = c
    return c

  return _register if cls is None else _register(cls)


def _ensure_registered():
  # Importing the architecture modules registers their names.
  import importlib
  for mod in ('analytic', 'ncsnpp', 'ddpm', 'ncsnv2'):
    try:
      importlib.import_module(f'score_sde_pds.models.{mod}')
    except ModuleNotFoundError as e:  # module not written yet
      if e.name != f'score_sde_pds.models.{mod}':
        raise


def registered_models() -> list[str]:
  _ensure_registered()
  return sorted(_MODELS)


def get_model(name: str):
  """Returns the registered model class for `name`; unknown names list the valid ones."""
  _ensure_registered()
  if name not in _MODELS:
    close = difflib.get_close_matches(name, _MODELS, n=1)
    hint = f' Did you mean {close[0]!r}?' if close else ''
    raise ValueError(f'config.model.name={name!r} is not a registered model; '
                     f'valid names: {sorted(_MODELS)}.{hint}')
  return _MODELS[name]


def check_model_config(config) -> None:
  """Raises ValueError when config.data.image_size cannot be taken by the config's model.

  Cheap (no tracing): NCSN++/DDPM++/DDPM downsample len(ch_mult) - 1 times by 2, so the
  size must be divisible by 2**(len(ch_mult) - 1); NCSNv2 variants need their own multiple.
  """
  name = config.model.name
  get_model(name)
  check_augmented_config(config)
  size = config.data.image_size
  if name in ('ncsnpp', 'ddpm'):
    ch_mult = tuple(config.model.ch_mult)
    div = 2 ** (len(ch_mult) - 1)
    if size % div:
      raise ValueError(
          f'config.data.image_size={size} cannot be taken by model {name!r} with '
          f'config.model.ch_mult={ch_mult}: it must be divisible by 2**(len(ch_mult) - 1) = {div}.')
  elif name.startswith('ncsnv2'):
    from score_sde_pds.models import ncsnv2
    div = ncsnv2.size_divisor(name)
    if size % div:
      raise ValueError(f'config.data.image_size={size} is not supported by {name}: it must be '
                       f'a multiple of {div}.')


# ----------------------------------------------------------------------------- augmented SDEs
#
# Phase-space SDEs (sde_lib CLDSDE / PSLDSDE, config.training.sde 'cld' | 'psld') diffuse the
# stacked state z = [x; m] (B,H,W,2C), x first. The network takes z and the time t itself
# (PSLD's conditioning: the Fourier embedding sees log t, the positional one t) and predicts
# the epsilon of the kernel z_t = Psi_t z_0 + L_t eps (L_t the lower Cholesky factor of the
# kernel covariance, PSLD's decomp_mode 'lower'): all 2C channels, or only the C momentum
# channels when x receives no noise (CLD; PSLD with Gamma = 0, its 'score_m' mode).

AUGMENTED_SDE_NAMES = ('cld', 'psld')


def is_augmented_config(config) -> bool:
  """True when config.training.sde names a phase-space SDE (state [x; m], 2C channels)."""
  return str(config.training.get('sde', '')).lower() in AUGMENTED_SDE_NAMES


def momentum_only_config(config) -> bool:
  """True when the network predicts only the momentum epsilon (C channels): CLD, and PSLD
  with psld_gamma = 0 (no noise on x, so only the momentum score enters the sampler)."""
  name = str(config.training.get('sde', '')).lower()
  return name == 'cld' or (name == 'psld' and float(config.model.psld_gamma) == 0.)


def input_channels(config) -> int:
  """Channels of the network input: config.data.num_channels, doubled for CLD/PSLD."""
  c = int(config.data.num_channels)
  return 2 * c if is_augmented_config(config) else c


def output_channels(config, in_channels: int) -> int:
  """Channels of the network output for an input with `in_channels` channels: the same,
  except the momentum-only epsilon of CLD / PSLD with Gamma = 0 (in_channels // 2)."""
  if momentum_only_config(config):
    return in_channels // 2
  return in_channels


def check_augmented_config(config) -> None:
  """Raises ValueError for settings a network cannot take on the augmented state."""
  if not is_augmented_config(config):
    return
  sde = config.training.sde
  if getattr(get_model(config.model.name), 'is_analytic', False):
    return
  if not config.data.centered:
    raise ValueError(
        f'config.training.sde={sde!r} needs config.data.centered=True: the network takes the '
        'stacked state [x; m] as it is (PSLD data.norm=True); the [0, 1] -> [-1, 1] map of '
        'uncentered data would shift the momentum channels too.')
  if config.model.get('scale_by_sigma', False):
    raise ValueError(f'config.training.sde={sde!r} needs config.model.scale_by_sigma=False: the '
                     'network predicts epsilon of the augmented state, not a scaled score.')
  if not config.training.continuous:
    raise ValueError(f'config.training.sde={sde!r} needs config.training.continuous=True (the '
                     'network is conditioned on the continuous time t).')


def get_sigmas(config) -> np.ndarray:
  """Descending noise levels of the discrete VE model, shape (num_scales,).

  sigmas = exp(linspace(log sigma_max, log sigma_min, N)) as in score_sde.
  """
  return np.exp(np.linspace(np.log(config.model.sigma_max), np.log(config.model.sigma_min),
                            config.model.num_scales))


def get_ddpm_params(config) -> dict:
  """Discrete DDPM (VP) coefficients, each of shape (num_scales,) (score_sde's names)."""
  num_diffusion_timesteps = 1000
  beta_start = config.model.beta_min / config.model.num_scales
  beta_end = config.model.beta_max / config.model.num_scales
  betas = np.linspace(beta_start, beta_end, num_diffusion_timesteps, dtype=np.float64)
  alphas = 1. - betas
  alphas_cumprod = np.cumprod(alphas, axis=0)
  return {
      'betas': betas, 'alphas': alphas, 'alphas_cumprod': alphas_cumprod,
      'sqrt_alphas_cumprod': np.sqrt(alphas_cumprod),
      'sqrt_1m_alphas_cumprod': np.sqrt(1. - alphas_cumprod),
      'beta_min': beta_start * (num_diffusion_timesteps - 1),
      'beta_max': beta_end * (num_diffusion_timesteps - 1),
      'num_diffusion_timesteps': num_diffusion_timesteps,
  }


def init_model(rng, config, jit: bool = True):
  """Initialises the model named by `config.model.name`.

  `jit=False` runs `model.init` as traced Python (use it inside jax.eval_shape: the
  parameter dicts then keep their creation order, which jit's outputs do not).

  Returns:
    (model, model_state, params): the flax module, its non-param collections (dict,
    e.g. batch statistics; usually empty) and the parameter tree (dict).
  """
  model_cls = get_model(config.model.name)
  if hasattr(model_cls, 'init_from_config'):  # analytic models: no network
    return model_cls.init_from_config(rng, config)
  model = model_cls(config=config)
  check_augmented_config(config)
  input_shape = (1, config.data.image_size, config.data.image_size, input_channels(config))
  fake_input = jnp.zeros(input_shape, jnp.float32)
  fake_label = jnp.zeros((1,), jnp.int32)
  params_rng, dropout_rng = jax.random.split(rng)
  init = functools.partial(model.init, train=False)
  if jit:
    init = jax.jit(init)   # eager init of a large model is slow
  variables = init({'params': params_rng, 'dropout': dropout_rng}, fake_input, fake_label)
  variables = dict(variables)
  params = variables.pop('params')
  return model, variables, params


def get_model_fn(model, params, states, train: bool = False) -> Callable:
  """Returns model_fn(x, labels, rng=None) -> output, x (B,H,W,C), labels (B,)."""

  def model_fn(x, labels, rng=None):
    variables = {'params': params, **states}
    rngs = {'dropout': rng} if (train and rng is not None) else {}
    return model.apply(variables, x, labels, train=train, rngs=rngs)

  return model_fn


def get_score_fn(sde, model, params, states, train: bool = False, continuous: bool = True,
                 num_scales: int | None = None) -> Callable:
  """Wraps a model into score_fn(x, t, rng=None) -> score, x (B,H,W,C), t (B,).

  Conventions of score_sde (REFERENCE.md §1):
    VE continuous: label = sigma(t); the network output is the score.
    VE discrete:   label = round((T - t) (N - 1)) into the descending sigmas.
    VP/subVP continuous (and subVP always): label = 999 t, score = -output / std(t).
    VP discrete:   label = t (N - 1), score = -output / sqrt(1 - alphas_cumprod[label]).
    CLD / PSLD:    label = t; the output is epsilon of the augmented state (`get_eps_fn`),
                   score = -L_t^{-T} eps (`eps_to_augmented_score`), z and score (B,H,W,2C).
  `num_scales` is the N the network was trained with (config.model.num_scales); it
  defaults to sde.N and matters for discrete models sampled with fewer steps.
  Analytic models (no network) return their exact score; `params` is then the model.
  """
  from score_sde_pds import sde_lib  # local import: sde_lib does not import models
  if getattr(model, 'is_analytic', False):
    def analytic_score_fn(x, t, rng=None):
      del rng
      return params.score(sde, x, t)
    return analytic_score_fn

  if getattr(sde, 'is_augmented', False):
    eps_fn = get_eps_fn(sde, model, params, states, train=train, continuous=continuous)

    def augmented_score_fn(z, t, rng=None):
      return eps_to_augmented_score(sde, eps_fn(z, t, rng), t, z.shape[-1])
    return augmented_score_fn

  n_model = sde.N if num_scales is None else int(num_scales)
  model_fn = get_model_fn(model, params, states, train=train)

  def bcast(v, x):
    return v.reshape((-1,) + (1,) * (x.ndim - 1))

  if isinstance(sde, (sde_lib.VPSDE, sde_lib.subVPSDE)):
    def score_fn(x, t, rng=None):
      if continuous or isinstance(sde, sde_lib.subVPSDE):
        labels = t * 999
        std = sde.marginal_prob(jnp.zeros_like(x), t)[1]
      else:
        labels = t * (n_model - 1)
        betas = jnp.linspace(sde.beta_min / n_model, sde.beta_max / n_model, n_model)
        sqrt_1m_alphas_cumprod = jnp.sqrt(1. - jnp.cumprod(1. - betas))
        std = sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
      out = model_fn(x, labels, rng)
      return -out / bcast(std, out)
  elif isinstance(sde, sde_lib.VESDE):
    def score_fn(x, t, rng=None):
      if continuous:
        labels = sde.marginal_prob(jnp.zeros_like(x), t)[1]
      else:
        labels = jnp.round((sde.T - t) * (n_model - 1)).astype(jnp.int32)
      return model_fn(x, labels, rng)
  else:
    raise NotImplementedError(f'SDE class {type(sde).__name__} not supported by get_score_fn.')
  return score_fn


def get_eps_fn(sde, model, params, states, train: bool = False, continuous: bool = True,
               momentum_only: bool | None = None) -> Callable:
  """Epsilon predictor of a phase-space SDE: eps_fn(z, t, rng=None) -> (B,H,W,K).

  z (B,H,W,2C) is the stacked state [x; m], t (B,). A network is called with label t (PSLD's
  conditioning) and its output is returned as it is: K = 2C (eps of z_t = Psi_t z_0 + L_t eps)
  or K = C (the momentum part eps_m, CLD / PSLD with Gamma = 0). An analytic model gives
  eps = -L_t^T score (sde_lib.score_to_eps), the minimiser of the HSM loss (losses.py); its
  momentum part only when `momentum_only` (default: when sde has no noise on x).
  """
  if not getattr(sde, 'is_augmented', False):
    raise ValueError(f'get_eps_fn is for augmented (CLD/PSLD) SDEs, got {type(sde).__name__}.')
  if getattr(model, 'is_analytic', False):
    if momentum_only is None:
      momentum_only = sde_has_no_data_noise(sde)

    def analytic_eps_fn(z, t, rng=None):
      del rng
      eps = sde.score_to_eps(params.score(sde, z, t), t)
      return eps[..., eps.shape[-1] // 2:] if momentum_only else eps
    return analytic_eps_fn
  if not continuous:
    raise ValueError(f'{type(sde).__name__} networks are conditioned on the continuous time t; '
                     'set config.training.continuous=True.')
  model_fn = get_model_fn(model, params, states, train=train)

  def eps_fn(z, t, rng=None):
    return model_fn(z, t, rng)
  return eps_fn


def sde_has_no_data_noise(sde) -> bool:
  """True when G G^T has a zero data entry (CLD; PSLD with Gamma = 0): only the momentum
  score enters the reverse SDE, and a network predicts only eps_m. Needs concrete values."""
  from score_sde_pds import sde_lib  # local import: sde_lib does not import models
  if isinstance(sde, sde_lib.CLDSDE):
    return True
  if isinstance(sde, sde_lib.PSLDSDE):
    return float(np.asarray(sde.gamma)) == 0.
  return False


def eps_to_augmented_score(sde, eps, t, state_channels: int | None = None):
  """Score of the stacked state from a predicted epsilon, score = -L_t^{-T} eps.

  Args:
    sde: a phase-space SDE. eps: (B,H,W,2C), or (B,H,W,C) momentum-only. t: (B,).
    state_channels: 2C; default eps.shape[-1] (a full eps).
  Returns:
    (B,H,W,2C). For a momentum-only eps the momentum score is -eps_m / (L_t)_22 and the data
    score is set to 0 (as PSLD's get_score in its 'score_m' mode): with lower-triangular L_t
    and no noise on x, G G^T s and every sampler built from sde_lib's blocks read only s_m.
  """
  k = eps.shape[-1]
  state_channels = k if state_channels is None else int(state_channels)
  if k == state_channels:
    return sde.eps_to_score(eps, t)
  if 2 * k != state_channels:
    raise ValueError(f'the network output has {k} channels; for a state of {state_channels} '
                     f'channels it must have {state_channels} (eps of [x; m]) or '
                     f'{state_channels // 2} (momentum eps).')
  L = sde.chol_block(t)                                       # (B, 2, 2)
  l22 = L[..., 1, 1].reshape((-1,) + (1,) * (eps.ndim - 1)).astype(eps.dtype)
  return jnp.concatenate([jnp.zeros_like(eps), -eps / l22], axis=-1)

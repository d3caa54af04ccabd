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
  input_shape = (1, config.data.image_size, config.data.image_size, config.data.num_channels)
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

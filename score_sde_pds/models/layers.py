"""Common layers of the DDPM / NCSN++ score networks (score_sde parameter layout).

All image tensors are NHWC, (B, H, W, C). Parameters are always float32; every module
takes a compute `dtype` (float32 or bfloat16) used for its convolutions / matmuls.
The conv helpers `ddpm_conv1x1` / `ddpm_conv3x3` are plain functions, so the flax
`Conv_k` they create belongs to whichever module calls them (as in score_sde).

Only what NCSN++, DDPM++ and DDPM need lives here; the NCSNv2 (RefineNet) layers and
instance norms are in `ncsnv2.py`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_pds.models import conv_grad

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def get_dtype(config):
  """Compute dtype from `config.model.dtype` ('float32' default, or 'bfloat16')."""
  name = config.model.get('dtype', 'float32') or 'float32'
  name = str(jnp.dtype(name)) if not isinstance(name, str) else name.lower()
  if name not in _DTYPES:
    raise ValueError(f"config.model.dtype={name!r}; expected 'float32' or 'bfloat16'.")
  return _DTYPES[name]


def get_act(config) -> Callable:
  """Activation named by `config.model.nonlinearity` (elu, relu, lrelu, swish)."""
  name = config.model.nonlinearity.lower()
  acts = {
      'elu': nn.elu,
      'relu': nn.relu,
      'lrelu': functools.partial(nn.leaky_relu, negative_slope=0.2),
      'swish': nn.swish,
  }
  if name not in acts:
    raise NotImplementedError(f'Activation {name!r} is not implemented; valid: {sorted(acts)}.')
  return acts[name]


def get_normalization(config, dtype: Any = jnp.float32):
  """Normalisation layer factory of DDPM (only GroupNorm is used by NCSN++ / DDPM)."""
  norm = config.model.normalization
  if norm == 'GroupNorm':
    return functools.partial(nn.GroupNorm, dtype=dtype, param_dtype=jnp.float32)
  raise NotImplementedError(
      f'normalization={norm!r} is not used by DDPM/NCSN++; the NCSNv2 instance norms '
      'live in score_sde_pds/models/ncsnv2.py.')


def group_norm(num_channels: int, dtype: Any = jnp.float32) -> nn.GroupNorm:
  """GroupNorm with min(C // 4, 32) groups and epsilon 1e-6 (NCSN++ convention)."""
  return nn.GroupNorm(num_groups=min(num_channels // 4, 32), epsilon=1e-6, dtype=dtype,
                      param_dtype=jnp.float32)


def default_init(scale: float = 1.):
  """DDPM initialiser: variance scaling, fan_avg, uniform; scale 0 means 1e-10."""
  scale = 1e-10 if scale == 0 else scale
  return nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


def _ddpm_conv(x, out_planes, size, stride, bias, dilation, init_scale, dtype):
  return nn.Conv(out_planes, kernel_size=(size, size), strides=(stride, stride),
                 padding='SAME', use_bias=bias, kernel_dilation=(dilation, dilation),
                 kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros,
                 dtype=dtype, param_dtype=jnp.float32,
                 conv_general_dilated=conv_grad.conv_general_dilated)(x)


def ddpm_conv1x1(x, out_planes, stride=1, bias=True, dilation=1, init_scale=1.,
                 dtype=jnp.float32):
  """1x1 conv with DDPM init: (B, H, W, C) -> (B, H / stride, W / stride, out_planes)."""
  return _ddpm_conv(x, out_planes, 1, stride, bias, dilation, init_scale, dtype)


def ddpm_conv3x3(x, out_planes, stride=1, bias=True, dilation=1, init_scale=1.,
                 dtype=jnp.float32):
  """3x3 'SAME' conv with DDPM init: (B, H, W, C) -> (B, H / stride, W / stride, out_planes)."""
  return _ddpm_conv(x, out_planes, 3, stride, bias, dilation, init_scale, dtype)


def get_timestep_embedding(timesteps, embedding_dim: int, max_positions: int = 10000):
  """Sinusoidal embedding of (B,) timesteps -> (B, embedding_dim) float32.

  Frequencies exp(-log(max_positions) * i / (half - 1)), i < half = embedding_dim // 2;
  [sin, cos] halves, zero-padded by one column when embedding_dim is odd.
  """
  if timesteps.ndim != 1:
    raise ValueError(f'timesteps must have shape (B,), got {timesteps.shape}.')
  half = embedding_dim // 2
  scale = math.log(max_positions) / (half - 1)
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [(0, 0), (0, 1)])
  return emb


class NIN(nn.Module):
  """Per-pixel linear map (network-in-network): (..., C_in) -> (..., num_units).

  Params `W` (C_in, num_units) and `b` (num_units,).
  """
  num_units: int
  init_scale: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_dim = x.shape[-1]
    w = self.param('W', default_init(scale=self.init_scale), (in_dim, self.num_units),
                   jnp.float32)
    b = self.param('b', nn.initializers.zeros, (self.num_units,), jnp.float32)
    y = jnp.einsum('...c,cd->...d', x.astype(self.dtype), w.astype(self.dtype))
    return y + b.astype(self.dtype)


def spatial_attention(h, q_layer, k_layer, v_layer, dtype):
  """Softmax self-attention over all H*W positions of (B, H, W, C) features.

  Logits and softmax are in float32 whatever `dtype`; returns (B, H, W, C) in `dtype`.
  """
  b, height, width, c = h.shape
  q, k, v = q_layer(h), k_layer(h), v_layer(h)
  w = jnp.einsum('bhwc,bHWc->bhwHW', q, k, preferred_element_type=jnp.float32)
  w = w * (int(c) ** (-0.5))
  w = jax.nn.softmax(w.reshape(b, height, width, height * width), axis=-1)
  w = w.reshape(b, height, width, height, width).astype(dtype)
  return jnp.einsum('bhwHW,bHWc->bhwc', w, v.astype(dtype))


class AttnBlock(nn.Module):
  """DDPM self-attention block: (B, H, W, C) -> (B, H, W, C), x + attention(x).

  Params: `<norm>_0`, `NIN_0..3` (q, k, v, output projection with init scale 0).
  """
  normalize: Callable[..., nn.Module]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = self.normalize()(x)
    h = spatial_attention(h, NIN(c, dtype=self.dtype), NIN(c, dtype=self.dtype),
                          NIN(c, dtype=self.dtype), self.dtype)
    h = NIN(c, init_scale=0., dtype=self.dtype)(h)
    return x + h


class Upsample(nn.Module):
  """Nearest 2x upsampling, optionally followed by a 3x3 conv: (B, H, W, C) -> (B, 2H, 2W, C)."""
  with_conv: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = jax.image.resize(x, (b, 2 * h, 2 * w, c), 'nearest')
    if self.with_conv:
      y = ddpm_conv3x3(y, c, dtype=self.dtype)
    return y


class Downsample(nn.Module):
  """2x downsampling by stride-2 3x3 conv or 2x2 average pool: (B, H, W, C) -> (B, H/2, W/2, C)."""
  with_conv: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if self.with_conv:
      return ddpm_conv3x3(x, c, stride=2, dtype=self.dtype)
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')


class ResnetBlockDDPM(nn.Module):
  """DDPM residual block: (B, H, W, C) [+ temb (B, T)] -> (B, H, W, out_ch).

  Params: `<norm>_0`, `Conv_0`, `Dense_0` (if temb), `<norm>_1`, `Conv_1`, and the
  shortcut (`Conv_2` if conv_shortcut else `NIN_0`) when C != out_ch.
  """
  act: Callable
  normalize: Callable[..., nn.Module]
  out_ch: Optional[int] = None
  conv_shortcut: bool = False
  dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, train=True):
    c = x.shape[-1]
    out_ch = self.out_ch if self.out_ch else c
    h = self.act(self.normalize()(x))
    h = ddpm_conv3x3(h, out_ch, dtype=self.dtype)
    if temb is not None:
      t = nn.Dense(out_ch, kernel_init=default_init(), dtype=self.dtype,
                   param_dtype=jnp.float32)(self.act(temb))
      h = h + t[:, None, None, :]
    h = self.act(self.normalize()(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = ddpm_conv3x3(h, out_ch, init_scale=0., dtype=self.dtype)
    if c != out_ch:
      if self.conv_shortcut:
        x = ddpm_conv3x3(x, out_ch, dtype=self.dtype)
      else:
        x = NIN(out_ch, dtype=self.dtype)(x)
    return x + h

"""Layers of NCSN++ / DDPM++ (score_sde parameter layout).

Tensors are NHWC (B, H, W, C); `temb` is the (B, 4 nf) time embedding. Parameters are
float32; `dtype` is the compute dtype of convs / matmuls. Module and parameter names
(`GroupNorm_k`, `Conv_k`, `Dense_0`, `NIN_k`, `Conv2d_0/{weight,bias}`) follow flax
auto-naming in the same call order as score_sde, so official checkpoints load as they
are (after reshaping GroupNorm scale/bias from [1,1,1,C] to (C,)).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_pds.models import layers
from score_sde_pds.models import up_or_down_sampling as updown

conv1x1 = layers.ddpm_conv1x1
conv3x3 = layers.ddpm_conv3x3
NIN = layers.NIN
default_init = layers.default_init
group_norm = layers.group_norm

_SQRT2 = math.sqrt(2.)


class GaussianFourierProjection(nn.Module):
  """Random Fourier features of a (B,) input -> (B, 2 embedding_size), float32.

  Param `W` (embedding_size,) ~ N(0, scale^2), not trained (stop_gradient).
  Output [sin(2 pi x W), cos(2 pi x W)].
  """
  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    w = self.param('W', nn.initializers.normal(stddev=self.scale), (self.embedding_size,),
                   jnp.float32)
    w = jax.lax.stop_gradient(w)
    proj = x.astype(jnp.float32)[:, None] * w[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Combine(nn.Module):
  """Merges a skip input x (B, H, W, Cx) into y (B, H, W, Cy) through a 1x1 conv.

  method 'sum' -> (B, H, W, Cy); 'cat' -> (B, H, W, 2 Cy). Param: `Conv_0`.
  """
  method: str = 'cat'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    h = conv1x1(x, y.shape[-1], dtype=self.dtype)
    if self.method == 'cat':
      return jnp.concatenate([h, y.astype(h.dtype)], axis=-1)
    if self.method == 'sum':
      return h + y
    raise ValueError(f'Combine method {self.method!r} not recognised (cat | sum).')


class AttnBlockpp(nn.Module):
  """Self-attention over spatial positions: (B, H, W, C) -> (B, H, W, C).

  Params: `GroupNorm_0`, `NIN_0..2` (q, k, v), `NIN_3` (output, init_scale).
  Residual x + h, divided by sqrt(2) when skip_rescale.
  """
  skip_rescale: bool = False
  init_scale: float = 0.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = group_norm(c, self.dtype)(x)
    h = layers.spatial_attention(h, NIN(c, dtype=self.dtype), NIN(c, dtype=self.dtype),
                                 NIN(c, dtype=self.dtype), self.dtype)
    h = NIN(c, init_scale=self.init_scale, dtype=self.dtype)(h)
    if self.skip_rescale:
      return (x + h) / _SQRT2
    return x + h


class Upsample(nn.Module):
  """2x upsampling: (B, H, W, C) -> (B, 2H, 2W, out_ch or C).

  fir=False: nearest neighbour (+ `Conv_0` 3x3 if with_conv).
  fir=True: FIR upsampling, or the fused `Conv2d_0` (3x3, up=True) if with_conv.
  """
  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, height, width, c = x.shape
    out_ch = self.out_ch if self.out_ch else c
    if not self.fir:
      h = jax.image.resize(x, (b, 2 * height, 2 * width, c), 'nearest')
      if self.with_conv:
        h = conv3x3(h, out_ch, dtype=self.dtype)
    elif not self.with_conv:
      h = updown.upsample_2d(x, self.fir_kernel, factor=2)
    else:
      h = updown.Conv2d(out_ch, kernel=3, up=True, resample_kernel=tuple(self.fir_kernel),
                        use_bias=True, kernel_init=default_init(), dtype=self.dtype)(x)
    if h.shape[-1] != out_ch:
      raise ValueError(f'Upsample without conv keeps {c} channels; out_ch={out_ch} needs '
                       'with_conv=True.')
    return h


class Downsample(nn.Module):
  """2x downsampling: (B, H, W, C) -> (B, H/2, W/2, out_ch or C).

  fir=False: stride-2 3x3 `Conv_0` if with_conv, else 2x2 average pooling.
  fir=True: the fused `Conv2d_0` (3x3, down=True) if with_conv, else FIR downsampling.
  """
  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    out_ch = self.out_ch if self.out_ch else c
    if not self.fir:
      if self.with_conv:
        x = conv3x3(x, out_ch, stride=2, dtype=self.dtype)
      else:
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')
    elif not self.with_conv:
      x = updown.downsample_2d(x, self.fir_kernel, factor=2)
    else:
      x = updown.Conv2d(out_ch, kernel=3, down=True, resample_kernel=tuple(self.fir_kernel),
                        use_bias=True, kernel_init=default_init(), dtype=self.dtype)(x)
    if x.shape[-1] != out_ch:
      raise ValueError(f'Downsample without conv keeps {c} channels; out_ch={out_ch} needs '
                       'with_conv=True.')
    return x


def _add_temb(h, temb, act, out_ch, dtype):
  """h (B, H, W, out_ch) + Dense(act(temb)) broadcast over space (the `Dense_0` param)."""
  t = nn.Dense(out_ch, kernel_init=default_init(), dtype=dtype,
               param_dtype=jnp.float32)(act(temb))
  return h + t[:, None, None, :]


class ResnetBlockDDPMpp(nn.Module):
  """DDPM++ residual block: (B, H, W, C) [+ temb] -> (B, H, W, out_ch or C).

  Params: `GroupNorm_0`, `Conv_0`, `Dense_0` (if temb), `GroupNorm_1`, `Conv_1`, and
  the shortcut when C != out_ch (`Conv_2` 3x3 if conv_shortcut else `NIN_0`).
  """
  act: Callable
  out_ch: Optional[int] = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, train=True):
    c = x.shape[-1]
    out_ch = self.out_ch if self.out_ch else c
    h = self.act(group_norm(c, self.dtype)(x))
    h = conv3x3(h, out_ch, dtype=self.dtype)
    if temb is not None:
      h = _add_temb(h, temb, self.act, out_ch, self.dtype)
    h = self.act(group_norm(out_ch, self.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
    if c != out_ch:
      if self.conv_shortcut:
        x = conv3x3(x, out_ch, dtype=self.dtype)
      else:
        x = NIN(out_ch, dtype=self.dtype)(x)
    if self.skip_rescale:
      return (x + h) / _SQRT2
    return x + h


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN-style residual block, optionally resampling by 2.

  (B, H, W, C) [+ temb] -> (B, H', W', out_ch or C), H' = 2H (up), H/2 (down) or H.
  Params: `GroupNorm_0`, `Conv_0`, `Dense_0` (if temb), `GroupNorm_1`, `Conv_1`, and
  the 1x1 shortcut `Conv_2` when the channels change or the block resamples.
  Resampling is FIR (fir=True) or nearest / box (fir=False), applied to both the
  residual branch (after the first norm + act) and the shortcut.
  """
  act: Callable
  up: bool = False
  down: bool = False
  out_ch: Optional[int] = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.
  dtype: Any = jnp.float32

  def _resample(self, v):
    if self.up:
      if self.fir:
        return updown.upsample_2d(v, self.fir_kernel, factor=2)
      return updown.naive_upsample_2d(v, factor=2)
    if self.down:
      if self.fir:
        return updown.downsample_2d(v, self.fir_kernel, factor=2)
      return updown.naive_downsample_2d(v, factor=2)
    return v

  @nn.compact
  def __call__(self, x, temb=None, train=True):
    c = x.shape[-1]
    out_ch = self.out_ch if self.out_ch else c
    h = self.act(group_norm(c, self.dtype)(x))
    h = self._resample(h)
    x = self._resample(x)
    h = conv3x3(h, out_ch, dtype=self.dtype)
    if temb is not None:
      h = _add_temb(h, temb, self.act, out_ch, self.dtype)
    h = self.act(group_norm(out_ch, self.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
    if c != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch, dtype=self.dtype)
    if self.skip_rescale:
      return (x + h) / _SQRT2
    return x + h

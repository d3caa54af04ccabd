"""FIR up/downsampling (StyleGAN2 style) as used by NCSN++.

All image tensors are NHWC. The FIR filters act on every channel separately; a 1-D
filter `k` of length K stands for the separable 2-D filter outer(k, k), normalised to
unit sum and then multiplied by `gain` (times factor**2 when upsampling, so that a
constant image keeps its value).

Operations (H, W spatial sizes, f the factor):
  upfirdn2d          pad / insert zeros, filter, subsample      (generic primitive)
  upsample_2d        (N, H, W, C) -> (N, f H, f W, C)
  downsample_2d      (N, H, W, C) -> (N, H / f, W / f, C)
  upsample_conv_2d   transposed strided conv then FIR filter      C -> C_out
  conv_downsample_2d FIR filter then strided conv                 C -> C_out
  naive_upsample_2d / naive_downsample_2d: nearest / box versions (fir=False).
`Conv2d` is the flax module holding the weights of the fused variants; its params are
named `weight` (kh, kw, C_in, C_out) and `bias` (C_out,) as in score_sde checkpoints.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds.models import conv_grad

_DN = ('NHWC', 'HWIO', 'NHWC')


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
  """FIR filter as a normalised 2-D float32 array (K, K); 1-D input is made separable."""
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f'FIR kernel must be 1-D or square 2-D, got shape {k.shape}.')
  return k / np.sum(k)


def upfirdn2d(x, k, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
  """Upsample by zero insertion, pad, FIR-filter and subsample each channel.

  Same operation on both spatial axes:
    1. insert `up - 1` zeros after every pixel:       H -> H * up
    2. pad `pad[0]` before and `pad[1]` after (negative values crop)
    3. convolve (true convolution, kernel flipped) with `k`, keeping the valid part
    4. keep every `down`-th pixel.

  Args:
    x: (N, H, W, C) images.
    k: (Kh, Kw) FIR filter, used as given (not normalised here).
    up, down: integer factors.
    pad: (before, after) padding applied after zero insertion.

  Returns:
    (N, H', W', C) with H' = (H * up + pad[0] + pad[1] - Kh) // down + 1, dtype of x.
  """
  k = np.asarray(k, dtype=np.float32)
  if k.ndim != 2:
    raise ValueError(f'upfirdn2d expects a 2-D kernel, got shape {k.shape}.')
  if not all(isinstance(v, (int, np.integer)) for v in (up, down, *pad)):
    raise TypeError('up, down and pad must be integers.')
  n, h, w, c = x.shape
  p0, p1 = int(pad[0]), int(pad[1])
  kernel = np.ascontiguousarray(k[::-1, ::-1])[:, :, None, None]  # true convolution
  # interior padding inserts up-1 zeros between pixels; the high side gets the
  # up-1 trailing zeros of the last pixel plus the requested padding.
  spatial = (p0, p1 + up - 1, up - 1)
  cfg = [(0, 0, 0), spatial, spatial, (0, 0, 0)]
  zero = jnp.zeros((), x.dtype)
  if up == 1:
    # depthwise conv over the channels
    x = jax.lax.pad(x, zero, cfg)
    kernel = jnp.asarray(np.tile(kernel, (1, 1, 1, c)), dtype=x.dtype)
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(down, down), padding='VALID', dimension_numbers=_DN,
        feature_group_count=c)
  # Upsampling: fold the channels into the batch and run a single-channel conv, which
  # is much faster than a depthwise conv on the 4x larger zero-inserted image (CPU).
  y = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w, 1)
  y = jax.lax.pad(y, zero, cfg)
  y = jax.lax.conv_general_dilated(
      y, jnp.asarray(kernel, dtype=x.dtype), window_strides=(down, down), padding='VALID',
      dimension_numbers=_DN)
  return jnp.transpose(y.reshape(n, c, y.shape[1], y.shape[2]), (0, 2, 3, 1))


def upsample_2d(x, k: Optional[Sequence[float]] = None, factor: int = 2, gain: float = 1.):
  """FIR upsampling: (N, H, W, C) -> (N, H * factor, W * factor, C).

  `k` defaults to [1] * factor (nearest neighbour).
  """
  k = setup_kernel([1] * factor if k is None else k) * (gain * factor ** 2)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k: Optional[Sequence[float]] = None, factor: int = 2, gain: float = 1.):
  """FIR downsampling: (N, H, W, C) -> (N, H // factor, W // factor, C).

  `k` defaults to [1] * factor (average pooling).
  """
  k = setup_kernel([1] * factor if k is None else k) * gain
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x, w, k: Optional[Sequence[float]] = None, factor: int = 2,
                     gain: float = 1.):
  """Strided transposed convolution followed by an FIR filter (fused upsample + conv).

  Args:
    x: (N, H, W, C_in).
    w: (kh, kw, C_in, C_out) conv weights, kh == kw odd (3 in NCSN++).
    k: FIR filter (1-D separable or 2-D); default [1] * factor.

  Returns:
    (N, H * factor, W * factor, C_out).
  """
  kh, kw, _, _ = w.shape
  if kh != kw:
    raise ValueError('upsample_conv_2d needs a square conv kernel.')
  kf = setup_kernel([1] * factor if k is None else k) * (gain * factor ** 2)
  # Transposed conv with stride `factor` and no padding: zero insertion between
  # pixels, a full (kw - 1) border before, (factor - 1 + max(kw - factor, 0)) after,
  # then a correlation with `w`.
  hi = factor - 1 + max(kw - factor, 0)
  y = jax.lax.conv_general_dilated(
      x, w.astype(x.dtype), window_strides=(1, 1), padding=[(kw - 1, hi), (kw - 1, hi)],
      lhs_dilation=(factor, factor), dimension_numbers=_DN)
  p = (kf.shape[0] - factor) - (kw - 1)
  return upfirdn2d(y, kf, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k: Optional[Sequence[float]] = None, factor: int = 2,
                       gain: float = 1.):
  """FIR filter followed by a strided valid convolution (fused downsample + conv).

  Args:
    x: (N, H, W, C_in).
    w: (kh, kw, C_in, C_out), kh == kw.
    k: FIR filter; default [1] * factor.

  Returns:
    (N, H // factor, W // factor, C_out).
  """
  kh, kw, _, _ = w.shape
  if kh != kw:
    raise ValueError('conv_downsample_2d needs a square conv kernel.')
  kf = setup_kernel([1] * factor if k is None else k) * gain
  p = (kf.shape[0] - factor) + (kw - 1)
  y = upfirdn2d(x, kf, pad=((p + 1) // 2, p // 2))
  return jax.lax.conv_general_dilated(
      y, w.astype(x.dtype), window_strides=(factor, factor), padding='VALID',
      dimension_numbers=_DN)


def naive_upsample_2d(x, factor: int = 2):
  """Nearest-neighbour upsampling: (N, H, W, C) -> (N, H * factor, W * factor, C)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x, factor: int = 2):
  """Box-filter downsampling: (N, H, W, C) -> (N, H // factor, W // factor, C)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // factor, factor, w // factor, factor, c)
  return jnp.mean(x, axis=(2, 4))


class Conv2d(nn.Module):
  """Conv layer with optional fused FIR up- or downsampling (StyleGAN2).

  Params: `weight` (kernel, kernel, C_in, fmaps), `bias` (fmaps,), float32.
  Input (N, H, W, C_in) -> (N, H', W', fmaps) with H' = 2H (up), H/2 (down) or H.
  """
  fmaps: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  weight_var: str = 'weight'
  kernel_init: Optional[Callable[..., Any]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ValueError('Conv2d cannot both upsample and downsample.')
    if self.kernel < 1 or self.kernel % 2 != 1:
      raise ValueError('Conv2d kernel size must be odd.')
    init = self.kernel_init if self.kernel_init is not None else nn.initializers.lecun_normal()
    w = self.param(self.weight_var, init, (self.kernel, self.kernel, x.shape[-1], self.fmaps),
                   jnp.float32)
    x = x.astype(self.dtype)
    w = w.astype(self.dtype)
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = conv_grad.conv_nhwc(x, w)
    if self.use_bias:
      b = self.param('bias', nn.initializers.zeros, (x.shape[-1],), jnp.float32)
      x = x + b.astype(self.dtype).reshape((1, 1, 1, -1))
    return x

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


def _separable_factors(k: np.ndarray):
  """(kv, kh) with outer(kv, kh) == k (float64) for a rank-1 2-D kernel, else None."""
  k = np.asarray(k, np.float64)
  i, j = np.unravel_index(np.argmax(np.abs(k)), k.shape)
  if k[i, j] == 0:
    return None
  kv, kh = k[:, j] / k[i, j], k[i, :]
  if not np.allclose(np.outer(kv, kh), k, rtol=1e-6, atol=1e-7 * abs(k[i, j])):
    return None
  return kv, kh


def _pad_axis(x, axis: int, lo: int, hi: int):
  """Zero padding (negative values crop) of one axis."""
  cfg = [(0, 0, 0)] * x.ndim
  cfg[axis] = (lo, hi, 0)
  return jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _upfirdn1d(x, taps: np.ndarray, axis: int, up: int, down: int, pad: tuple[int, int]):
  """upfirdn of one axis of x with the 1-D filter `taps`, as a sum of shifted slices.

  y[o] = sum_j taps[K-1-j] z[o down + j], z the zero-inserted (up) and padded signal.
  Upsampling uses the polyphase form: output phase r (o = up q + r) only sees the taps
  j with (r + j - pad[0]) % up == 0, applied to x[q + (r + j - pad[0]) // up], so the
  zeros are never materialised; the phases are interleaved by a stack + reshape.
  Downsampling slices with stride `down`. Why by hand: XLA:CPU runs the equivalent
  depthwise / single-channel convolutions ~3x slower than these fused elementwise
  loops (docs/speed.md), and no library ships a JAX upfirdn.
  """
  n = x.shape[axis]
  kf = np.asarray(taps, np.float64)[::-1]
  p0, p1 = pad
  out = (n * up + p0 + p1 - len(kf)) // down + 1
  if out < 1:
    raise ValueError(f'upfirdn: empty output along axis {axis} (size {n}, up {up}, '
                     f'down {down}, pad {pad}, {len(kf)} taps).')
  terms = [(float(c), j) for j, c in enumerate(kf) if c != 0]
  if up == 1:
    xp = _pad_axis(x, axis, p0, p1)
    acc = None
    for c, j in terms:
      v = c * jax.lax.slice_in_dim(xp, j, j + down * (out - 1) + 1, down, axis)
      acc = v if acc is None else acc + v
    return acc if acc is not None else jnp.zeros(
        x.shape[:axis] + (out,) + x.shape[axis + 1:], x.dtype)
  full = n * up + p0 + p1 - len(kf) + 1       # output length before subsampling
  q_len = -(-full // up)
  phases = []
  for r in range(up):
    offs = [(c, (r + j - p0) // up) for c, j in terms if (r + j - p0) % up == 0]
    if not offs:
      phases.append(jnp.zeros(x.shape[:axis] + (q_len,) + x.shape[axis + 1:], x.dtype))
      continue
    lo = max(0, -min(d for _, d in offs))
    hi = max(0, q_len + max(d for _, d in offs) - n)
    xp = _pad_axis(x, axis, lo, hi)
    acc = None
    for c, d in offs:
      v = c * jax.lax.slice_in_dim(xp, lo + d, lo + d + q_len, 1, axis)
      acc = v if acc is None else acc + v
    phases.append(acc)
  y = jnp.stack(phases, axis=axis + 1)
  y = y.reshape(x.shape[:axis] + (q_len * up,) + x.shape[axis + 1:])
  return jax.lax.slice_in_dim(y, 0, down * (out - 1) + 1, down, axis)


def upfirdn2d(x, k, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
  """Upsample by zero insertion, pad, FIR-filter and subsample each channel.

  Same operation on both spatial axes:
    1. insert `up - 1` zeros after every pixel:       H -> H * up
    2. pad `pad[0]` before and `pad[1]` after (negative values crop)
    3. convolve (true convolution, kernel flipped) with `k`, keeping the valid part
    4. keep every `down`-th pixel.
  Separable (rank-1) kernels, e.g. every NCSN++ FIR kernel, run as two 1-D polyphase
  passes of shifted slices (`_upfirdn1d`); other kernels as one depthwise convolution.

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
  if up < 1 or down < 1:
    raise ValueError(f'upfirdn2d: up and down must be >= 1, got up={up}, down={down}.')
  p = (int(pad[0]), int(pad[1]))
  up, down = int(up), int(down)
  factors = _separable_factors(k)
  if factors is not None:
    x = _upfirdn1d(x, factors[0], 1, up, down, p)
    return _upfirdn1d(x, factors[1], 2, up, down, p)
  # general 2-D kernel: zero insertion + padding by lax.pad, then a depthwise conv
  c = x.shape[-1]
  kernel = np.ascontiguousarray(k[::-1, ::-1])[:, :, None, None]  # true convolution
  # interior padding inserts up-1 zeros between pixels; the high side gets the
  # up-1 trailing zeros of the last pixel plus the requested padding.
  spatial = (p[0], p[1] + up - 1, up - 1)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), spatial, spatial, (0, 0, 0)])
  kernel = jnp.asarray(np.tile(kernel, (1, 1, 1, c)), dtype=x.dtype)
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(down, down), padding='VALID', dimension_numbers=_DN,
      feature_group_count=c)


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


def _subpixel_taps(kw: int, factor: int):
  """Tap map of a stride-`factor` transposed conv in sub-pixel (phase) form.

  Output pixel o = factor q + r of the transposed conv sees w[a] x[q + d] for the taps
  a with (r + a - (kw - 1)) % factor == 0, d = (r + a - (kw - 1)) // factor. Returns
  (idx (S, factor) int: tap a at window offset u = d - d_min for phase r, or kw for
  none; d_min; S).
  """
  taps = [(r, a, (r + a - (kw - 1)) // factor) for r in range(factor) for a in range(kw)
          if (r + a - (kw - 1)) % factor == 0]
  d_min = min(d for _, _, d in taps)
  size = max(d for _, _, d in taps) - d_min + 1
  idx = np.full((size, factor), kw, np.int32)
  for r, a, d in taps:
    idx[d - d_min, r] = a
  return idx, d_min, size


def upsample_conv_2d(x, w, k: Optional[Sequence[float]] = None, factor: int = 2,
                     gain: float = 1.):
  """Strided transposed convolution followed by an FIR filter (fused upsample + conv).

  The transposed conv ('VALID', output length (H - 1) factor + kw: zero insertion
  between pixels, a (kw - 1) border on both sides, correlation with `w`) is computed in
  sub-pixel form: one stride-1 conv of the undilated x with the factor**2 phase
  kernels stacked on the output channels, then a pixel shuffle. Same sums, without
  the ~factor**2 multiplications by inserted zeros of the dilated conv.

  Args:
    x: (N, H, W, C_in).
    w: (kh, kw, C_in, C_out) conv weights, kh == kw odd (3 in NCSN++).
    k: FIR filter (1-D separable or 2-D); default [1] * factor.

  Returns:
    (N, H * factor, W * factor, C_out).
  """
  kh, kw, c_in, c_out = w.shape
  if kh != kw:
    raise ValueError('upsample_conv_2d needs a square conv kernel.')
  kf = setup_kernel([1] * factor if k is None else k) * (gain * factor ** 2)
  n, h, wd, _ = x.shape
  idx, d_min, size = _subpixel_taps(kw, factor)
  # phase kernels: wp[u, v, :, r, s, :] = w[idx[u, r], idx[v, s]] (zero for idx == kw)
  w0 = jnp.pad(w.astype(x.dtype), ((0, 1), (0, 1), (0, 0), (0, 0)))
  wp = w0[idx[:, None, :, None], idx[None, :, None, :]]       # (S, S, f, f, Ci, Co)
  wp = wp.transpose(0, 1, 4, 2, 3, 5).reshape(size, size, c_in, factor * factor * c_out)
  extra = kw - factor                         # transposed-conv length (n - 1) f + kw
  qh, qw = -(-(h * factor + extra) // factor), -(-(wd * factor + extra) // factor)
  pads = [(-d_min, qh + size - 1 - h + d_min), (-d_min, qw + size - 1 - wd + d_min)]
  y = conv_grad.conv_nhwc(x, wp, (1, 1), pads)                 # (N, qh, qw, f f Co)
  y = y.reshape(n, qh, qw, factor, factor, c_out).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(n, qh * factor, qw * factor, c_out)[:, :h * factor + extra,
                                                     :wd * factor + extra]
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
  return conv_grad.conv_nhwc(y, w.astype(x.dtype), (factor, factor), 'VALID')


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

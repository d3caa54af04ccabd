"""Preconditioning operators of Preconditioned Diffusion Sampling (PDS).

PDS (Ma et al., "Accelerating Score-based Generative Models with Preconditioned
Diffusion Sampling") replaces the isotropic noise and score of Langevin / reverse
diffusion steps by preconditioned ones:

  noise  z  ->  M z                           (paper Eq. 10, "M dw")
  score  s  ->  (M M^T + omega S) s           (paper Eq. 10 / Theorem 1)

with M built from a spatial gain d (per pixel and channel) and a frequency gain r
(per 2-D DFT coefficient and channel):

  M z      = Re F^-1[ r * F[ d * z ] ]                                    (1)
  M M^T g  = Re F^-1[ r * F[ d^2 * F^-1[ r * F[g] ] ] ]                   (2)

F is the unnormalised 2-D DFT over the spatial axes (H, W) (`jnp.fft.fft2`), F^-1
its inverse (1/(H W) normalisation). Gains are stored in the *unshifted* FFT layout
(DC at [0, 0]), never fftshift-ed, exactly as the reference code indexes them.

Mathematics of (1) and (2). Write D = diag(d) and R = F^-1 diag(r) F (a circulant
operator per channel). The DFT matrix is symmetric (F^T = F) and F^-1 = conj(F)/(HW),
so R^T = F^-1 diag(r(-k)) F: R is real (maps real images to real images) and
symmetric exactly when the real gain is even in frequency, r(k) = r(-k) (indices
mod H, W). Under that condition M = R D, M^T = D R, and (2) is exactly M M^T = R D^2 R:
symmetric, and positive definite iff every r and every d is non-zero (we require
them > 0, so M is invertible as Theorem 1 needs). The reference applies the same
circulant R on both sides of D^2 -- correct because its statistics gains are even
(E|F x(k)|^2 = E|F x(-k)|^2 for real x) up to float rounding.

For a real gain that is NOT even, R is complex (R = R_e + i R_o with the real
circulants R_e = F^-1 r_e F, r_e(k) = (r(k) + r(-k)) / 2, symmetric, and R_o,
antisymmetric). The noise map (1) is then M = Re(R) D = R_e D, while the reference's
formula (2) with its complex intermediate gives
  Re(R D^2 R) = R_e D^2 R_e - R_o D^2 R_o = M M^T + R_o^T D^2 R_o,
which is still symmetric positive definite but is NOT M M^T: drift and noise no
longer match and Theorem 1's stationarity is lost. The factories of this module
(`Preconditioner.create` and everything built on it) therefore replace r by its
even part r_e before use. For an exactly even r this is a bit-exact no-op
((a + a) / 2 == a in floating point); for the statistics gains it changes a few
entries by at most one ulp. With r even, (1) and (2) are the exact M and M M^T,
and the final `.real` only drops rounding noise.

Solenoidal term (Theorem 1). The paper writes S[.] = Re[F[.] - F^T[.]], which read
literally is zero (the DFT matrix is symmetric). We use instead the real
skew-symmetric, translation-invariant operator

  S g = Re F^-1[ i * phi(k) * F[g] ]                                       (3)

with phi a real ODD function of the frequency (phi(-k) = -phi(k)). Then i phi is
Hermitian-antisymmetric, so S maps real images to real images, and
S^T = F^-1 diag(-i phi) F = -S, i.e. <u, S u> = 0 for every real u. `create`
projects any given phase onto its odd part (phi(k) - phi(-k)) / 2 (this zeroes the
self-conjugate frequencies k = -k: DC and the Nyquist ones (H/2 or 0, W/2 or 0)). The default phase
phi(k) = sin(2 pi k_h / H) + sin(2 pi k_w / W) makes S the sum of the periodic
central differences, S g[h, w] = (g[h+1, w] - g[h-1, w] + g[h, w+1] - g[h, w-1]) / 2.

Images are NHWC: (B, H, W, C). Every operator maps over the last three axes, so
unbatched (H, W, C) inputs and `jax.vmap` / `jax.jit` work as well.

This module is pure: no file I/O at import time; `load_statistics` and
`save_statistics` do I/O only when called.
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'Preconditioner',
    'VALID_FILTERS',
    'VALID_MODES',
    'statistics_to_gain',
    'statistics_from_moments',
    'compute_statistics',
    'parametric_gain',
    'default_skew_phase',
    'even_part',
    'odd_part',
    'load_statistics',
    'save_statistics',
    'save_reference_statistics',
]

VALID_FILTERS = ('statistics', 'parametric', 'calibrated')
VALID_MODES = ('reference', 'marginal')

_SPATIAL_AXES = (-3, -2)  # H, W of (..., H, W, C)


# ----------------------------------------------------------------------------
# Frequency-index helpers (numpy, construction time only).
# ----------------------------------------------------------------------------

def _negate_freq(a):
  """Returns a[(-h) mod H, (-w) mod W, ...] for a of shape (H, W, ...)."""
  return np.roll(np.flip(a, axis=(0, 1)), shift=(1, 1), axis=(0, 1))


def even_part(r):
  """(r(k) + r(-k)) / 2 of a real (H, W, C) frequency gain (unshifted layout).

  Bit-exact no-op when r is already even.
  """
  r = np.asarray(r)
  if r.ndim < 2:
    return r
  return ((r + _negate_freq(r)) / 2).astype(r.dtype)


def odd_part(phi):
  """(phi(k) - phi(-k)) / 2 of a real (H, W[, C]) frequency phase (unshifted layout)."""
  phi = np.asarray(phi)
  if phi.ndim < 2:
    raise ValueError('the skew phase must have shape (H, W) or (H, W, C), got '
                     f'{phi.shape}')
  return ((phi - _negate_freq(phi)) / 2).astype(phi.dtype)


def default_skew_phase(shape):
  """Odd phase phi(k) = sin(2 pi k_h / H) + sin(2 pi k_w / W), shape (H, W, C).

  With Eq. (3) this is the periodic central difference
  S g = (g[h+1] - g[h-1] + g[w+1] - g[w-1]) / 2, a real skew-symmetric operator.
  """
  h, w, c = _check_shape(shape)
  kh = np.fft.fftfreq(h)[:, None]  # k_h / H in the unshifted layout
  kw = np.fft.fftfreq(w)[None, :]
  phi = np.sin(2 * np.pi * kh) + np.sin(2 * np.pi * kw)
  phi = odd_part(phi)  # exact zeros at DC / Nyquist
  return np.broadcast_to(phi[:, :, None], (h, w, c)).astype(np.float32)


def _check_shape(shape):
  try:
    h, w, c = (int(s) for s in shape)
  except (TypeError, ValueError):
    raise ValueError(f'image shape must be (H, W, C), got {shape!r}') from None
  if min(h, w, c) <= 0:
    raise ValueError(f'image shape must be positive (H, W, C), got {shape!r}')
  return h, w, c


# ----------------------------------------------------------------------------
# Gains.
# ----------------------------------------------------------------------------

def statistics_to_gain(stat, alpha=5.0, name='statistics'):
  """PDS filter gain from a statistic, as the reference builds it.

  S_hat = S / max(S) with ONE global max over all positions and channels, then
  gain = alpha / (S_hat + alpha - 1) (computed in float32 in the reference's
  order, 1 / ((S_hat + alpha - 1) / alpha), so it is bit-identical to it).
  Gains lie in [1, alpha / (alpha - 1)] for non-negative S.

  Args:
    stat: (H, W, C) (or any shape) array: R = log(1 + E|F x|^2) or A = E[x^2].
    alpha: filter strength, > 1.
    name: how to name `stat` in error messages (e.g. the file it came from).
  Returns:
    float32 array of the shape of `stat`.
  """
  alpha = _check_alpha(alpha)
  s = np.asarray(stat, dtype=np.float32)
  if not np.all(np.isfinite(s)):
    raise ValueError(f'{name}: statistics contain non-finite values '
                     f'({int(np.sum(~np.isfinite(s)))} entries)')
  smax = s.max()
  if not smax > 0:
    raise ValueError(f'{name}: the maximum of the statistics is {smax}; it must be '
                     '> 0 to normalise S / max(S)')
  s_hat = s / smax
  a = np.float32(alpha)
  gain = np.float32(1) / ((s_hat + a - np.float32(1)) / a)
  _check_gain(gain, name)
  return gain.astype(np.float32)


def _check_alpha(alpha):
  try:
    alpha = float(alpha)
  except (TypeError, ValueError):
    raise ValueError(f'config.sampling.pds.alpha must be a number > 1, got '
                     f'{alpha!r}') from None
  if not (math.isfinite(alpha) and alpha > 1):
    raise ValueError(f'config.sampling.pds.alpha must be > 1 (gain = alpha / '
                     f'(S/max S + alpha - 1)), got {alpha}')
  return alpha


def _check_gain(gain, name):
  g = np.asarray(gain)
  if not np.all(np.isfinite(g)):
    raise ValueError(f'{name}: gains contain non-finite values; M must be invertible')
  if not np.all(g > 0):
    raise ValueError(f'{name}: gains must be > 0 so that M is invertible, found '
                     f'min {g.min()} ({int(np.sum(g <= 0))} non-positive entries)')


def parametric_gain(shape, radius, lam):
  """The paper's (r, lambda) frequency filter for NCSN / NCSNv2, shape (H, W, C).

  On the CENTRED spectrum (DC at (H//2, W//2), i.e. after fftshift), every
  frequency OUTSIDE the disk (h - H/2)^2 + (w - W/2)^2 <= 2 r^2 gets gain `lam`,
  the ones inside (the low frequencies, DC included) gain 1. In terms of the signed
  DFT indices k_h in [-H/2, H/2), k_w in [-W/2, W/2): lam scales exactly the
  frequencies with k_h^2 + k_w^2 > 2 r^2, i.e. radial index |k| > sqrt(2) r.
  The mask is then ifftshift-ed to the unshifted layout the operator uses. For odd
  H or W the centre is the DC position H//2 (so the mask stays even in k).

  Args:
    shape: (H, W, C).
    radius: r >= 0 in frequency-index units (pixels of the spectrum).
    lam: gain outside the disk, > 0 (lam > 1 amplifies high frequencies).
  Returns:
    float32 (H, W, C).
  """
  h, w, c = _check_shape(shape)
  radius = float(radius)
  lam = float(lam)
  if not math.isfinite(radius) or radius < 0:
    raise ValueError(f'config.sampling.pds.radius must be >= 0, got {radius}')
  if not math.isfinite(lam) or lam <= 0:
    raise ValueError(f'config.sampling.pds.lam must be > 0 (M must be invertible), '
                     f'got {lam}')
  hh = np.arange(h)[:, None] - (h // 2)  # centred grid: row h <-> k_h = h - H//2
  ww = np.arange(w)[None, :] - (w // 2)
  outside = hh ** 2 + ww ** 2 > 2 * radius ** 2
  centred = np.where(outside, np.float32(lam), np.float32(1)).astype(np.float32)
  unshifted = np.fft.ifftshift(centred, axes=(0, 1))
  return np.broadcast_to(unshifted[:, :, None], (h, w, c)).astype(np.float32)


# ----------------------------------------------------------------------------
# Statistics.
# ----------------------------------------------------------------------------

def compute_statistics(images, batch_size=50):
  """PDS statistics of a set of images, as the reference computes them.

  Pixels are taken in [0, 1] (uint8 input is divided by 255 in float32, like
  torchvision's ToTensor), per channel, no centring, unnormalised 2-D FFT over
  (H, W), no fftshift (DC at [0, 0]):

    R = log(1 + mean_n |F[x_n]|^2)    (paper Eq. 14)
    A = mean_n x_n^2                  (per-pixel second moment)

  Accumulated in float64 (the reference accumulates in float32; the two agree to
  float32 rounding, see tests/test_statistics.py).

  Args:
    images: (N, H, W, C) uint8 or float in [0, 1], or an iterable of (H, W, C) or
      (n, H, W, C) arrays.
    batch_size: images per FFT batch.
  Returns:
    dict with 'freq' R and 'space' A, float32 (H, W, C), and 'num_images' N.
  """
  power = None
  second = None
  n = 0
  for batch in _iter_batches(images, batch_size):
    x = _to_unit_float(batch).astype(np.float64)
    f = np.fft.fft2(x, axes=(1, 2))
    p = (f.real ** 2 + f.imag ** 2).sum(axis=0)
    s = (x ** 2).sum(axis=0)
    power = p if power is None else power + p
    second = s if second is None else second + s
    n += x.shape[0]
  if n == 0:
    raise ValueError('compute_statistics: no images')
  return statistics_from_moments(power / n, second / n, num_images=n)


def statistics_from_moments(power_spectrum, pixel_second_moment, num_images=None):
  """R = log(1 + E|F x|^2) and A = E[x^2] from known moments, (H, W, C) each.

  Used with an analytic data distribution (the oracle's E|F x|^2 and E[x^2]).
  """
  p = np.asarray(power_spectrum, dtype=np.float64)
  a = np.asarray(pixel_second_moment, dtype=np.float64)
  if p.ndim != 3 or a.ndim != 3:
    raise ValueError('moments must have shape (H, W, C), got '
                     f'{p.shape} and {a.shape}')
  out = {'freq': np.log1p(p).astype(np.float32), 'space': a.astype(np.float32)}
  if num_images is not None:
    out['num_images'] = int(num_images)
  return out


def _to_unit_float(x):
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255)
  return x.astype(np.float32)


def _iter_batches(images, batch_size):
  if isinstance(images, np.ndarray) or (hasattr(images, '__array__') and
                                        not hasattr(images, '__next__')):
    arr = np.asarray(images)
    if arr.ndim != 4:
      raise ValueError(f'images must be (N, H, W, C), got shape {arr.shape}')
    for i in range(0, arr.shape[0], batch_size):
      yield arr[i:i + batch_size]
    return
  buf = []
  for item in images:
    item = np.asarray(item)
    if item.ndim == 3:
      buf.append(item[None])
    elif item.ndim == 4:
      buf.append(item)
    else:
      raise ValueError(f'images must be (H, W, C) or (n, H, W, C), got {item.shape}')
    if sum(b.shape[0] for b in buf) >= batch_size:
      yield np.concatenate(buf)
      buf = []
  if buf:
    yield np.concatenate(buf)


# ----------------------------------------------------------------------------
# Statistics files.
# ----------------------------------------------------------------------------

def load_statistics(path, shape=None, kind=None):
  """Loads a PDS statistic as float32 (H, W, C).

  Formats:
    - `.npy`: the reference layout (C, H, W) (or (1, C, H, W)), e.g. the
      reference's `ffhq_freq.npy` / `ffhq_space.npy`, or the files this project's
      `save_reference_statistics` writes.
    - `.npz`: this project's format (`save_statistics`): keys 'freq' and/or
      'space' stored as (H, W, C) plus metadata; `kind` ('freq' or 'space')
      selects the key and may be omitted when the file holds only one of them.

  Args:
    path: file path.
    shape: optional expected (H, W, C) image shape (from config.data).
    kind: 'freq' or 'space' (needed for .npz files holding both).
  Returns:
    float32 (H, W, C).
  Raises:
    FileNotFoundError: missing file.
    ValueError: wrong shape, unknown format/key, non-finite values.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'PDS statistics file not found: {path}')
  if kind is not None and kind not in ('freq', 'space'):
    raise ValueError(f"kind must be 'freq' or 'space', got {kind!r}")
  if shape is not None:
    shape = _check_shape(shape)
  ext = os.path.splitext(path)[1].lower()
  if ext == '.npy':
    arr = np.load(path, allow_pickle=False)
    if arr.ndim == 4 and arr.shape[0] == 1:
      arr = arr[0]
    if arr.ndim != 3:
      raise ValueError(f'{path}: expected a (C, H, W) array (reference layout), got '
                       f'shape {arr.shape}')
    if shape is not None:
      expected_chw = (shape[2], shape[0], shape[1])
      if arr.shape != expected_chw:
        hint = (' (it looks (H, W, C); .npy statistics are stored (C, H, W))'
                if arr.shape == shape else '')
        raise ValueError(f'{path}: statistics of shape {arr.shape} (C, H, W) do not '
                         f'match the image shape (H, W, C) = {shape} of config.data '
                         f'(expected {expected_chw}){hint}')
    arr = np.transpose(arr, (1, 2, 0))
  elif ext == '.npz':
    with np.load(path, allow_pickle=False) as data:
      keys = [k for k in ('freq', 'space') if k in data.files]
      if kind is None:
        if len(keys) != 1:
          raise ValueError(f"{path}: holds keys {data.files}; pass kind='freq' or "
                           "kind='space'")
        kind = keys[0]
      if kind not in data.files:
        raise ValueError(f"{path}: no '{kind}' statistics in this file (keys: "
                         f'{data.files})')
      arr = np.array(data[kind])
    if arr.ndim != 3:
      raise ValueError(f"{path}: '{kind}' must be (H, W, C), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
      raise ValueError(f"{path}: '{kind}' statistics of shape {arr.shape} (H, W, C) "
                       f'do not match the image shape (H, W, C) = {shape} of '
                       'config.data')
  else:
    raise ValueError(f'{path}: unknown statistics format {ext!r}; expected .npy '
                     '(C, H, W) or .npz (keys freq/space, (H, W, C))')
  arr = arr.astype(np.float32)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f'{path}: statistics contain non-finite values '
                     f'({int(np.sum(~np.isfinite(arr)))} entries)')
  return arr


def _atomic_write(path, write_fn):
  """Writes via `write_fn(fileobj)` to a temporary file, then os.replace."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # A unique name opened with mode 'xb' (not mkstemp) so the file gets the umask
  # permissions, like any other output.
  tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.'
                     f'{uuid.uuid4().hex}.tmp')
  try:
    with open(tmp, 'xb') as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_statistics(path, freq=None, space=None, **metadata):
  """Writes this project's .npz statistics file atomically (tmp + os.replace).

  Args:
    path: destination (.npz).
    freq: optional (H, W, C) R = log(1 + E|F x|^2).
    space: optional (H, W, C) A = E[x^2].
    **metadata: scalars / strings stored alongside (e.g. dataset, num_images,
      seed); 'layout' = 'HWC' and 'format_version' are always added.
  """
  arrays = {}
  shapes = set()
  for key, val in (('freq', freq), ('space', space)):
    if val is None:
      continue
    val = np.asarray(val, dtype=np.float32)
    if val.ndim != 3:
      raise ValueError(f'{key} statistics must be (H, W, C), got {val.shape}')
    if not np.all(np.isfinite(val)):
      raise ValueError(f'{key} statistics contain non-finite values')
    arrays[key] = val
    shapes.add(val.shape)
  if not arrays:
    raise ValueError('save_statistics: nothing to save (freq and space are None)')
  if len(shapes) != 1:
    raise ValueError(f'freq and space statistics shapes differ: {sorted(shapes)}')
  meta = {'layout': 'HWC', 'format_version': 1}
  meta.update(metadata)
  for key, val in meta.items():
    if key in ('freq', 'space'):
      raise ValueError(f'metadata key {key!r} is reserved')
    arrays[key] = np.asarray(val if val is not None else '')
    if arrays[key].dtype == object:
      arrays[key] = np.asarray(str(val))
  _atomic_write(path, lambda f: np.savez(f, **arrays))


def save_reference_statistics(path, stat):
  """Writes one statistic in the reference .npy layout (C, H, W), atomically.

  Args:
    path: destination (.npy), e.g. '<name>_freq.npy'.
    stat: (H, W, C) array.
  """
  stat = np.asarray(stat, dtype=np.float32)
  if stat.ndim != 3:
    raise ValueError(f'statistics must be (H, W, C), got {stat.shape}')
  chw = np.ascontiguousarray(np.transpose(stat, (2, 0, 1)))
  _atomic_write(path, lambda f: np.save(f, chw, allow_pickle=False))


def _resolve_path(path, workdir, key):
  from score_sde_pds import utils
  return utils.resolve_path(path, workdir, key)


# ----------------------------------------------------------------------------
# The operator.
# ----------------------------------------------------------------------------

def _fft2(x):
  return jnp.fft.fft2(x, axes=_SPATIAL_AXES)


def _ifft2(x):
  return jnp.fft.ifft2(x, axes=_SPATIAL_AXES)


def _compute_dtype(dtype):
  # FFTs need float32/float64; bfloat16/float16 inputs go through float32.
  return jnp.promote_types(dtype, jnp.float32)


@flax.struct.dataclass
class Preconditioner:
  """PDS preconditioner M (Eq. 1), M M^T (Eq. 2) and solenoidal S (Eq. 3).

  A pytree: the gains and omega are leaves (traceable, vmappable); the flags are
  static, so the identity (all flags False) runs no FFT and returns its input
  unchanged. Build it with `create`, `identity`, `from_statistics`, `parametric`
  or `from_config` (they validate and make r even); the raw constructor does not.

  Attributes:
    space_gain: d, (H, W, C) or scalar.
    freq_gain: r, (H, W, C) or scalar, unshifted FFT layout (DC at [0, 0]).
    omega: weight of the solenoidal term in `drift`.
    skew_phase: phi, real odd (H, W, C) (or broadcastable) phase of S, or 0.
    use_space, use_freq, use_skew: static switches of the three parts.
  """
  space_gain: Any = 1.0
  freq_gain: Any = 1.0
  omega: Any = 0.0
  skew_phase: Any = 0.0
  use_space: bool = flax.struct.field(pytree_node=False, default=False)
  use_freq: bool = flax.struct.field(pytree_node=False, default=False)
  use_skew: bool = flax.struct.field(pytree_node=False, default=False)

  # -- construction ---------------------------------------------------------

  @classmethod
  def identity(cls):
    """M = I, S = 0: noise(z) is z and drift(g) is g (no FFT at all)."""
    return cls()

  @classmethod
  def create(cls, space_gain=None, freq_gain=None, omega=0.0, skew_phase=None,
             shape=None, name='preconditioner'):
    """Validated constructor.

    Args:
      space_gain: d, (H, W, C) array, scalar, or None (gain 1, skipped).
      freq_gain: r, (H, W, C) array (unshifted layout), scalar, or None. Replaced
        by its even part (r(k) + r(-k)) / 2 (module docstring).
      omega: solenoidal weight; the S term is active iff omega != 0.
      skew_phase: phi for S (projected onto its odd part); None -> the central
        difference phase `default_skew_phase(shape)`.
      shape: (H, W, C) image shape; required for omega != 0 with the default
        phase and used to check the gains' shapes.
      name: prefix of error messages.
    Returns:
      Preconditioner.
    """
    if shape is not None:
      shape = _check_shape(shape)
    gains = {}
    for key, val in (('space_gain', space_gain), ('freq_gain', freq_gain)):
      if val is None:
        gains[key] = None
        continue
      arr = np.asarray(val, dtype=np.float32)
      _check_gain(arr, f'{name}: {key}')
      if arr.ndim not in (0, 3):
        raise ValueError(f'{name}: {key} must be a scalar or (H, W, C), got shape '
                         f'{arr.shape}')
      if arr.ndim == 3 and shape is not None and arr.shape != shape:
        raise ValueError(f'{name}: {key} of shape {arr.shape} does not match the '
                         f'image shape (H, W, C) = {shape}')
      if key == 'freq_gain' and arr.ndim == 3:
        arr = even_part(arr)
      if arr.ndim == 0 and float(arr) == 1.0:
        gains[key] = None  # a unit gain is skipped
        continue
      gains[key] = arr
    try:
      omega_f = float(omega)
    except (TypeError, ValueError):
      raise ValueError(f'config.sampling.pds.omega must be a number, got '
                       f'{omega!r}') from None
    if not math.isfinite(omega_f):
      raise ValueError(f'config.sampling.pds.omega must be finite, got {omega_f}')
    use_skew = omega_f != 0.0
    phase = np.float32(0)
    if use_skew:
      if skew_phase is None:
        if shape is None:
          known = [g.shape for g in gains.values() if g is not None and g.ndim == 3]
          if not known:
            raise ValueError(f'{name}: omega != 0 needs the image shape (H, W, C) '
                             'to build the solenoidal operator')
          shape = known[0]
        phase = default_skew_phase(shape)
      else:
        phase = odd_part(np.asarray(skew_phase, dtype=np.float32))
        if not np.all(np.isfinite(phase)):
          raise ValueError(f'{name}: skew_phase contains non-finite values')
    sg, fg = gains['space_gain'], gains['freq_gain']
    return cls(
        space_gain=jnp.asarray(sg) if sg is not None else jnp.float32(1),
        freq_gain=jnp.asarray(fg) if fg is not None else jnp.float32(1),
        omega=jnp.float32(omega_f),
        skew_phase=jnp.asarray(phase),
        use_space=sg is not None,
        use_freq=fg is not None,
        use_skew=use_skew)

  @classmethod
  def from_statistics(cls, freq_stats=None, space_stats=None, alpha=5.0, shape=None,
                      omega=0.0):
    """The reference's statistics filters.

    r = gain(R), d = gain(A) with gain(S) = alpha / (S / max S + alpha - 1)
    (`statistics_to_gain`). A missing statistic means gain 1.

    Args:
      freq_stats: R = log(1 + E|F x|^2), (H, W, C) array or a file path
        (`load_statistics`), or None.
      space_stats: A = E[x^2], (H, W, C) array or file path, or None.
      alpha: > 1.
      shape: optional (H, W, C) the statistics must match.
      omega: solenoidal weight.
    """
    alpha = _check_alpha(alpha)
    if shape is not None:
      shape = _check_shape(shape)
    gains = {}
    for key, stat in (('freq', freq_stats), ('space', space_stats)):
      if stat is None:
        gains[key] = None
        continue
      if isinstance(stat, (str, os.PathLike)):
        label = os.fspath(stat)
        stat = load_statistics(stat, shape=shape, kind=key)
      else:
        label = f'{key}_stats'
        stat = np.asarray(stat, dtype=np.float32)
        if stat.ndim != 3:
          raise ValueError(f'{label}: statistics must be (H, W, C), got shape '
                           f'{stat.shape}')
        if shape is not None and stat.shape != shape:
          raise ValueError(f'{label}: statistics of shape {stat.shape} do not match '
                           f'the image shape (H, W, C) = {shape}')
      gains[key] = statistics_to_gain(stat, alpha, name=label)
    return cls.create(space_gain=gains['space'], freq_gain=gains['freq'],
                      omega=omega, shape=shape)

  @classmethod
  def parametric(cls, shape, radius, lam, omega=0.0):
    """The paper's (r, lambda) frequency filter (`parametric_gain`), d = 1."""
    return cls.create(freq_gain=parametric_gain(shape, radius, lam), omega=omega,
                      shape=shape)

  @classmethod
  def from_config(cls, config, workdir=None, stats=None, info=None):
    """Builds the preconditioner of `config.sampling.pds`.

    Identity when `pds.enabled` is False. filter 'statistics': `freq_stats` /
    `space_stats` paths (empty -> gain 1; relative paths are looked up under
    `workdir` first, then the current directory), `alpha`: a number > 1, 'inf' (M = I,
    vanilla) or 'auto' (`calibration.auto_alpha`: the alpha minimising the Frechet
    distance of the config's sampler on the Gaussian proxy of `freq_stats`, inf
    included). filter 'calibrated': per-frequency gains r(k) from `gain_file`
    (`calibration.save_gain`, scripts/calibrate_pds.py) or, when it is empty,
    `calibration.calibrate_gain` on `freq_stats` (space gain 1). filter 'parametric':
    `radius` (0 -> 0.2 * H), `lam`. `omega` adds the solenoidal term. The image
    shape is (data.image_size, data.image_size, data.num_channels).

    Args:
      config: the config.
      workdir: where relative statistics / gain paths are looked up first.
      stats: optional {'freq': (H, W, C) or None, 'space': ...} used instead of the
        statistics files (e.g. the analytic oracle's exact statistics).
      info: optional dict, filled with what was chosen (run_lib's meta.json 'pds'
        record): filter, alpha (a number, 'inf', or None), the proxy's predicted
        Frechet distance of the choice ('proxy_fd') and of vanilla
        ('proxy_fd_vanilla') where the frequency statistics exist (computed for fixed
        filters only when `info` is given), ...
    """
    from score_sde_pds import calibration
    pds = config.sampling.pds
    record = info is not None      # predicted FDs of a fixed filter only when asked for
    info = {} if info is None else info
    mode = pds.get('mode', 'reference')
    if mode not in VALID_MODES:
      raise ValueError(f'config.sampling.pds.mode={mode!r} is unknown; valid modes: '
                       f'{", ".join(VALID_MODES)}')
    alpha = calibration.parse_alpha(pds.get('alpha', 5.0))
    pilot_n, pilot_conf = pds.get('pilot_samples', 0), pds.get('pilot_confidence', 0.9)
    if isinstance(pilot_n, bool) or not isinstance(pilot_n, (int, np.integer)) or pilot_n < 0:
      raise ValueError(f'config.sampling.pds.pilot_samples must be an integer >= 0 (0: no '
                       f'pilot check of alpha=auto), got {pilot_n!r}')
    if (isinstance(pilot_conf, bool) or not isinstance(pilot_conf, (int, float))
        or not 0.5 <= pilot_conf < 1):
      raise ValueError(f'config.sampling.pds.pilot_confidence must be a number in [0.5, 1), '
                       f'got {pilot_conf!r}')
    info.update(enabled=bool(pds.enabled))
    if not pds.enabled:
      return cls.identity()
    filt = pds.get('filter', 'statistics')
    if filt not in VALID_FILTERS:
      raise ValueError(f'config.sampling.pds.filter={filt!r} is unknown; valid '
                       f'filters: {", ".join(VALID_FILTERS)}')
    size = int(config.data.image_size)
    shape = (size, size, int(config.data.num_channels))
    omega = pds.get('omega', 0.0)
    info.update(filter=filt, mode=mode)
    if filt == 'parametric':
      radius = float(pds.get('radius', 0.0))
      if radius < 0:
        raise ValueError(f'config.sampling.pds.radius must be >= 0, got {radius}')
      if radius == 0:
        radius = 0.2 * shape[0]
      info.update(radius=radius, lam=float(pds.get('lam', 1.0)))
      return cls.parametric(shape, radius, pds.get('lam', 1.0), omega=omega)
    arrays = {}
    for key in ('freq', 'space'):
      if stats is not None:
        arrays[key] = None if stats.get(key) is None else np.asarray(stats[key], np.float32)
        continue
      val = pds.get(f'{key}_stats', '') or ''
      arrays[key] = (load_statistics(_resolve_path(val, workdir, f'config.sampling.pds.'
                                                   f'{key}_stats'), shape=shape, kind=key)
                     if val else None)
    if filt == 'calibrated':
      gain_file = pds.get('gain_file', '') or ''
      if gain_file:
        path = _resolve_path(gain_file, workdir, 'config.sampling.pds.gain_file')
        gain, meta = calibration.load_gain(path, shape=shape)
        info.update(gain_file=path, calibrated_for={k: v for k, v in meta.items() if k in (
            'N', 'sde', 'predictor', 'corrector', 'snr', 'n_steps', 'mode', 'eta')})
        if calibration.config_supported(config):
          kw = calibration.config_kwargs(config)
          differ = [f'{k}={meta[k]} (config: {kw[k]})' for k in (
              'N', 'predictor', 'corrector', 'mode') if k in meta and str(meta[k]) != str(kw[k])]
          if differ:
            info['warning'] = (f'{path} was calibrated for another sampler: '
                               + ', '.join(differ))
            logging.getLogger(__name__).warning('config.sampling.pds.gain_file: %s',
                                                info['warning'])
      else:
        if arrays['freq'] is None:
          raise ValueError("config.sampling.pds.filter='calibrated' needs "
                           'config.sampling.pds.gain_file (scripts/calibrate_pds.py writes '
                           'it) or config.sampling.pds.freq_stats to calibrate on')
        gain, cinfo = calibration.calibrate_gain(
            arrays['freq'], return_info=True, **calibration.config_kwargs(config))
        num = calibration.json_number
        info.update(proxy_fd=num(cinfo['fd']), proxy_fd_vanilla=num(cinfo['fd_vanilla']),
                    proxy_fd_alpha_filter=num(cinfo['fd_alpha']),
                    alpha_filter=calibration.alpha_label(cinfo['alpha']),
                    calibration=cinfo['method'],
                    calibration_seconds=round(cinfo['seconds'], 3))
      if (gain_file and arrays['freq'] is not None and record
          and calibration.config_supported(config)):
        info.update(zip(('proxy_fd', 'proxy_fd_vanilla'), map(
            calibration.json_number, calibration.predicted_fd(
                arrays['freq'], gain=gain, **calibration.config_kwargs(config)))))
      info.update(alpha=None)
      return cls.create(freq_gain=gain, omega=omega, shape=shape,
                        name='config.sampling.pds.gain_file')
    if arrays['freq'] is None and arrays['space'] is None and not omega:
      raise ValueError("config.sampling.pds.enabled=True with filter='statistics' "
                       'but neither config.sampling.pds.freq_stats nor '
                       'config.sampling.pds.space_stats is set (compute them with '
                       "scripts/compute_pds_statistics.py, or use filter='parametric')")
    if alpha == 'auto':
      alpha, cinfo = calibration.auto_alpha(
          arrays['freq'], space_stats=arrays['space'], return_info=True,
          **calibration.config_kwargs(config))
      info.update(alpha_setting='auto', proxy_fd=calibration.json_number(cinfo['fd']),
                  proxy_fd_vanilla=calibration.json_number(cinfo['fd_vanilla']),
                  calibration_seconds=round(cinfo['seconds'], 3))
    elif record and arrays['freq'] is not None and calibration.config_supported(config):
      info.update(zip(('proxy_fd', 'proxy_fd_vanilla'), map(
          calibration.json_number, calibration.predicted_fd(
              arrays['freq'], space_stats=arrays['space'], alpha=alpha,
              **calibration.config_kwargs(config)))))
    info.update(alpha=calibration.alpha_label(alpha))
    if math.isinf(alpha):   # M = I (vanilla; the solenoidal term stays if omega != 0)
      return cls.create(omega=omega, shape=shape)
    return cls.from_statistics(freq_stats=arrays['freq'], space_stats=arrays['space'],
                               alpha=alpha, shape=shape, omega=omega)

  # -- operators ------------------------------------------------------------

  @property
  def is_identity(self):
    """True when noise and drift are the identity (static)."""
    return not (self.use_space or self.use_freq or self.use_skew)

  def noise(self, z):
    """M z = Re F^-1[ r * F[ d * z ] ]  (Eq. 1; paper Eq. 10, noise term).

    Args:
      z: (B, H, W, C) (or (H, W, C)) real array.
    Returns:
      array of z's shape and dtype; z itself when M = I.
    """
    if not (self.use_space or self.use_freq):
      return z
    dtype = z.dtype
    x = z.astype(_compute_dtype(dtype))
    if self.use_space:
      x = x * jnp.asarray(self.space_gain, x.dtype)
    if self.use_freq:
      x = _ifft2(jnp.asarray(self.freq_gain, x.dtype) * _fft2(x)).real
    return x.astype(dtype)

  def noise_transpose(self, v):
    """M^T v = d * Re F^-1[ r * F[v] ]  (r even, so the circulant R is symmetric).

    Args:
      v: (B, H, W, C) real array.
    Returns:
      array of v's shape and dtype.
    """
    if not (self.use_space or self.use_freq):
      return v
    dtype = v.dtype
    x = v.astype(_compute_dtype(dtype))
    if self.use_freq:
      x = _ifft2(jnp.asarray(self.freq_gain, x.dtype) * _fft2(x)).real
    if self.use_space:
      x = x * jnp.asarray(self.space_gain, x.dtype)
    return x.astype(dtype)

  def mmt(self, g):
    """M M^T g = Re F^-1[ r * F[ d^2 * F^-1[ r * F[g] ] ] ]  (Eq. 2).

    The complex intermediate is kept and `.real` taken only at the end, as the
    reference does. Frequency-only: Re F^-1[r^2 F g]; space-only: d^2 g (equal to
    the reference's maps up to FFT round-off).

    Args:
      g: (B, H, W, C) real array.
    Returns:
      array of g's shape and dtype; g itself when M = I.
    """
    if not (self.use_space or self.use_freq):
      return g
    dtype = g.dtype
    x = g.astype(_compute_dtype(dtype))
    if self.use_space:
      d = jnp.asarray(self.space_gain, x.dtype)
      d2 = d * d
    if self.use_freq:
      r = jnp.asarray(self.freq_gain, x.dtype)
      if self.use_space:
        y = _ifft2(r * _fft2(d2 * _ifft2(r * _fft2(x)))).real
      else:
        y = _ifft2((r * r) * _fft2(x)).real
    else:
      y = d2 * x
    return y.astype(dtype)

  def skew(self, g):
    """S g = Re F^-1[ i * phi * F[g] ]  (Eq. 3), real skew-symmetric (S^T = -S).

    Args:
      g: (B, H, W, C) real array.
    Returns:
      array of g's shape and dtype (zeros when the solenoidal term is off).
    """
    if not self.use_skew:
      return jnp.zeros_like(g)
    dtype = g.dtype
    x = g.astype(_compute_dtype(dtype))
    phi = jnp.asarray(self.skew_phase, x.dtype)
    y = _ifft2((1j * phi) * _fft2(x)).real
    return y.astype(dtype)

  def drift(self, g):
    """(M M^T + omega S) g: the preconditioned score (paper Eq. 10, Theorem 1).

    Args:
      g: (B, H, W, C) real array (a score or a reverse-SDE drift).
    Returns:
      array of g's shape and dtype; g itself when M = I and omega S is off.
    """
    y = self.mmt(g)
    if self.use_skew:
      y = y + (jnp.asarray(self.omega, g.dtype) * self.skew(g)).astype(g.dtype)
    return y

  def __call__(self, g):
    """Alias of `drift`."""
    return self.drift(g)

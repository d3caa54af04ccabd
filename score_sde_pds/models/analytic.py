"""Exact score oracle: a stationary Gaussian random field on (H, W, C) images.

Data model (per channel c, independent channels):
  x = mu_c + F^-1[ sqrt(s_c(k)) F[w] ],  w ~ N(0, I),
with F the unnormalised 2-D DFT over (H, W) and a power spectrum
  s_c(k) = v_c * p(k) / mean_k p(k),   p(k) = (|k|^2 + k0^2)^(-beta/2),
where k = (k_h, k_w) are integer frequencies (cycles per image, `fftfreq * size`).
So x has mean mu_c, pixel variance v_c, and covariance Sigma = F^-1 diag(s) F, which
is diagonal in Fourier space: E|F[x - mu]_k|^2 = H W s(k).

Under a linear SDE the perturbed marginal is x_t = a(t) x_0 + std(t) z, hence
  Sigma_t = F^-1 diag(a^2 s + std^2) F,  mean a mu,
  score_t(x) = -F^-1[ F[x - a mu] / (a^2 s(k) + std^2) ]           (exact, any t).
All of this is FFT-diagonal and costs O(HWC log HW) per image.

Augmented (phase-space) SDEs (CLD, PSLD; sde.is_augmented): the state is z = [x; m]
stacked on the channel axis (B,H,W,2C), x_0 ~ the field and m_0 ~ N(0, kappa M) white and
independent of x_0. With Psi_t = Psi(t, 0) and the kernel covariance Sigma_t (both 2x2,
sde_lib block methods), each Fourier mode k of each channel is an independent 2-vector
  F[z_t](k) ~ N(Psi_t [F[mu](k); 0],  H W C_t(k)),   C_t(k) = Sigma_t + s(k) Psi_t e1 e1^T Psi_t^T
(Sigma_t already holds m_0's variance), so the exact score is, per mode,
  F[score](k) = -C_t(k)^{-1} (F[z_t](k) - Psi_t [F[mu](k); 0])   (a closed-form 2x2 inverse).
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_pds.models import utils as mutils


def _fft2(x):
  return jnp.fft.fft2(x, axes=(-3, -2))


def _ifft2(x):
  return jnp.fft.ifft2(x, axes=(-3, -2))


def power_law_spectrum(shape, beta: float, k0: float, variance) -> np.ndarray:
  """s(k) of shape (H, W, C) in the unshifted FFT layout, normalised so mean_k s = v_c."""
  H, W, C = shape
  kh = np.fft.fftfreq(H) * H
  kw = np.fft.fftfreq(W) * W
  k2 = kh[:, None] ** 2 + kw[None, :] ** 2
  p = (k2 + k0 ** 2) ** (-beta / 2.)
  p = p / p.mean()
  variance = np.broadcast_to(np.asarray(variance, np.float64), (C,))
  return (p[:, :, None] * variance[None, None, :]).astype(np.float64)


@mutils.register_model(name='analytic_gaussian')
@flax.struct.dataclass
class GaussianField:
  """The oracle as a pytree: `spectrum` s(k) (H,W,C), `mean` mu (C,).

  It is both the "model" and its "params" (see `init_from_config`), so a jitted sampler
  receives the spectrum as an argument, never as a baked-in constant.
  """
  spectrum: jnp.ndarray
  mean: jnp.ndarray
  is_analytic = True

  @classmethod
  def from_config(cls, config) -> 'GaussianField':
    m = config.model
    H = W = int(config.data.image_size)
    C = int(config.data.num_channels)
    std = np.broadcast_to(np.asarray(m.field_std, np.float64), (C,))
    if np.any(std <= 0) or not np.all(np.isfinite(std)):
      raise ValueError(f'config.model.field_std must be positive, got {m.field_std!r}.')
    if not m.field_k0 > 0:
      raise ValueError(f'config.model.field_k0 must be > 0, got {m.field_k0!r}.')
    s = power_law_spectrum((H, W, C), float(m.field_beta), float(m.field_k0), std ** 2)
    mean = np.broadcast_to(np.asarray(m.field_mean, np.float64), (C,))
    return cls(spectrum=jnp.asarray(s, jnp.float32), mean=jnp.asarray(mean, jnp.float32))

  @classmethod
  def init_from_config(cls, rng, config):
    """(model, model_state, params) like `mutils.init_model`; model and params coincide."""
    del rng
    field = cls.from_config(config)
    return field, {}, field

  @property
  def shape(self):
    return self.spectrum.shape

  def covariance_eigenvalues(self, a=1., std=0.):
    """Per-frequency variances a^2 s(k) + std^2 of x_t, shape (H,W,C) (or broadcast)."""
    return a ** 2 * self.spectrum + std ** 2

  def score(self, sde, x, t):
    """Exact score of the perturbed marginal p_t, x (B,H,W,C), t (B,) -> (B,H,W,C).

    For augmented SDEs x is the stacked state (B,H,W,2C) and so is the score.
    """
    if getattr(sde, 'is_augmented', False):
      return self._augmented_score(sde, x, t)
    ones = jnp.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    a = sde.marginal_prob(ones, t)[0]                      # (B,1,1,1) mean coefficient
    std = sde.marginal_prob(jnp.zeros_like(x), t)[1].reshape(a.shape)
    lam = self.covariance_eigenvalues(a, std)              # (B,H,W,C)
    r = _fft2(x - a * self.mean) / lam
    return -jnp.real(_ifft2(r)).astype(x.dtype)

  def _augmented_score(self, sde, z, t):
    """Score of p_t(z) for z = [x; m] (B,H,W,2C), per mode -C_t(k)^{-1} (F[z] - mean)."""
    C = z.shape[-1] // 2
    psi = sde.transition_block(t)                          # (B,2,2)
    sig = sde.cov_block(t)
    b = lambda v: v.reshape(-1, 1, 1, 1).astype(z.dtype)
    p11, p21 = b(psi[:, 0, 0]), b(psi[:, 1, 0])
    s = self.spectrum
    c11 = b(sig[:, 0, 0]) + s * p11 ** 2
    c12 = b(sig[:, 0, 1]) + s * p11 * p21
    c22 = b(sig[:, 1, 1]) + s * p21 ** 2
    det = c11 * c22 - c12 ** 2
    fx = _fft2(z[..., :C] - p11 * self.mean)
    fm = _fft2(z[..., C:] - p21 * self.mean)
    sx = -(c22 * fx - c12 * fm) / det
    sm = -(c11 * fm - c12 * fx) / det
    return jnp.concatenate([jnp.real(_ifft2(sx)), jnp.real(_ifft2(sm))], -1).astype(z.dtype)

  def mode_moments(self, sde, t):
    """Host float64 per-mode moments of z_t for any linear SDE (1x1 or 2x2 blocks).

    Args:
      sde: an sde_lib SDE (use sde_lib.host_sde for float64). t: scalar time.
    Returns:
      (mean_coef (k,), cov (H,W,C,k,k)): F[z_t](k) has mean H W mu_c mean_coef at k = 0
      (zero elsewhere) and covariance H W cov[k, c]; mean_coef = Psi_t e1.
    """
    t = np.asarray(t, np.float64)
    psi = np.asarray(sde.transition_block(t), np.float64)
    sig = np.asarray(sde.cov_block(t), np.float64)
    e = psi[:, 0]
    s = np.asarray(self.spectrum, np.float64)[..., None, None]
    return e, sig + s * np.outer(e, e)

  def sample(self, rng, n: int):
    """n exact data samples, (n,H,W,C) float32."""
    w = jax.random.normal(rng, (n,) + tuple(self.shape))
    return jnp.real(_ifft2(jnp.sqrt(self.spectrum) * _fft2(w))) + self.mean

  def second_moment_spectrum(self):
    """E|F[x]|^2 (H,W,C), unnormalised FFT, unshifted: H W s(k) + |F[mu]|^2 (DC only)."""
    H, W, _ = self.shape
    out = H * W * self.spectrum
    return out.at[0, 0].add((H * W * self.mean) ** 2)

  def pixel_second_moment(self):
    """E[x^2] per pixel, (H,W,C)."""
    var = jnp.mean(self.spectrum, axis=(0, 1))
    return jnp.broadcast_to(var + self.mean ** 2, self.shape)

  def dense_covariance(self) -> np.ndarray:
    """Sigma as a dense (HWC, HWC) matrix (small images only; for Frechet distances)."""
    H, W, C = self.shape
    eye = np.eye(H * W).reshape(H * W, H, W)
    cov = np.zeros((H * W * C, H * W * C))
    s = np.asarray(self.spectrum, np.float64)
    for c in range(C):
      cols = np.real(np.fft.ifft2(s[None, :, :, c] * np.fft.fft2(eye, axes=(1, 2)), axes=(1, 2)))
      idx = np.arange(H * W) * C + c
      cov[np.ix_(idx, idx)] = cols.reshape(H * W, H * W).T
    return cov


def measured_spectrum(samples, mean=None):
  """Per-frequency variances of samples: mean_n |F[x_n - mu]|^2 / (H W), (H,W,C).

  `mean` defaults to the per-channel sample mean.
  """
  x = np.asarray(samples, np.float64)
  if mean is None:
    mean = x.mean(axis=(0, 1, 2))
  H, W = x.shape[1:3]
  f = np.fft.fft2(x - np.asarray(mean), axes=(1, 2))
  return np.mean(np.abs(f) ** 2, axis=0) / (H * W)


def frechet_distance(samples, field: GaussianField) -> float:
  """Frechet distance between the Gaussian fitted to `samples` (N,H,W,C) and the exact field.

  FD = |mu_s - mu|^2 + tr(S_s + S - 2 (S^1/2 S_s S^1/2)^1/2). The sample covariance is
  estimated densely, so use small images (HWC <= ~1000) and N well above HWC for a
  small bias.
  """
  x = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
  mu_s = x.mean(0)
  cov_s = np.cov(x, rowvar=False)
  H, W, C = field.shape
  mu = np.broadcast_to(np.asarray(field.mean, np.float64), (H, W, C)).reshape(-1)
  cov = field.dense_covariance()
  w, v = np.linalg.eigh(cov)
  sq = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  m = sq @ cov_s @ sq
  ev = np.linalg.eigvalsh((m + m.T) / 2)
  tr_sqrt = np.sum(np.sqrt(np.clip(ev, 0, None)))
  return float(np.sum((mu_s - mu) ** 2) + np.trace(cov_s) + np.trace(cov) - 2 * tr_sqrt)

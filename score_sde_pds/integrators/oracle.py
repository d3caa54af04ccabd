"""Exact evaluation of samplers on the Gaussian-field oracle (models/analytic.py).

On the oracle the score is affine in the state and every operation of the fixed-step
samplers (conjugate, splitting, and the PC sampler without a Langevin corrector) is
affine in (prior draw, step noises) and translation invariant per channel. The output x
is therefore Gaussian and stationary, and its law follows from impulse responses:

  * one run with all noise set to zero gives the output mean;
  * one run per (noise source, state channel) with a unit impulse at pixel (0, 0) gives
    the response r (H,W,C); the output covariance is circulant, per Fourier mode k
        K(k)[c, c'] = sum_sources r^_c(k) conj(r^_c'(k)),   r^ = unnormalised 2-D FFT,
    in the units of the field's spectrum s(k) (its covariance eigenvalues).
All impulses are one batch through the sampler's own jitted code (via its noise_source
hook), so what is measured is the real sampler. The Frechet distance to the field,
    FD = sum_k tr(K + S - 2 (S^1/2 K S^1/2)^1/2) + |mean_out - mu|^2 (summed over pixels),
is then exact (no sampling error), `exact_frechet_distance`.

`pf_ode_reference` integrates the exact probability-flow ODE of the oracle per Fourier
mode with scipy (DOP853, float64), independent of the samplers: the reference for strong
convergence orders of the deterministic integrators.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from score_sde_pds import sde_lib


def impulse_source(state_shape, num_steps: int, tags: Sequence[int], prior: bool = True,
                   multiple: int = 1):
  """noise_source(k, tag) feeding one unit impulse per batch element (element 0: none).

  Args:
    state_shape: (H, W, K) of one sampler state (K = k C stacked channels).
    num_steps: scan steps of the sampler. tags: noise tags drawn per step.
    prior: include the prior draw (k = -1, tag 0) as a source.
    multiple: pad the batch with impulse-free elements to a multiple of this.
  Returns:
    (noise_source, batch size, table (E - 1, 3) of (step, tag, channel)); elements
    1..E-1 carry the impulses of the table rows.
  """
  H, W, K = state_shape
  rows = [(-1, 0, c) for c in range(K)] if prior else []
  rows += [(k, tag, c) for k in range(num_steps) for tag in tags for c in range(K)]
  table = np.asarray(rows, np.int64).reshape(-1, 3)
  pad = (-(1 + len(rows))) % multiple
  E = 1 + len(rows) + pad
  ke = jnp.asarray(np.concatenate([[-2], table[:, 0], [-2] * pad]), jnp.int32)
  te = jnp.asarray(np.concatenate([[-1], table[:, 1], [-1] * pad]), jnp.int32)
  ce = jnp.asarray(np.concatenate([[0], table[:, 2], [0] * pad]), jnp.int32)

  def source(k, tag):
    hit = ((ke == k) & (te == tag)).astype(jnp.result_type(float))
    onehot = jax.nn.one_hot(ce, K, dtype=hit.dtype) * hit[:, None]
    return jnp.zeros((E, H, W, K), hit.dtype).at[:, 0, 0, :].set(onehot)

  return source, E, table


def output_moments(build: Callable, score_fn: Callable, state_shape, num_steps: int,
                   tags: Sequence[int]):
  """Exact output mean image and per-mode covariance of an affine, stationary sampler.

  Args:
    build(noise_source, batch_size) -> sampling.Sampler drawing its noise from the source.
    score_fn: the oracle's score. state_shape: (H, W, K). num_steps, tags: as the sampler.
  Returns:
    (mean (H,W,C) float64, cov (H,W,C,C) complex128 Hermitian per mode, nfe).
  """
  source, E, table = impulse_source(state_shape, num_steps, tags, multiple=jax.device_count())
  sampler = build(source, E)
  x, nfe, info = jax.jit(lambda r: sampler.run(r, score_fn, sampler.preconditioner))(
      jax.random.PRNGKey(0))   # the sampler's own default preconditioner (PDS), if any
  if int(info['first_nonfinite_step']) >= 0:
    return None, None, int(nfe)
  x = np.asarray(x, np.float64)[:1 + len(table)]
  mean = x[0]
  R = np.fft.fft2(x[1:] - mean, axes=(1, 2))                   # (E-1, H, W, C)
  cov = np.einsum('ehwc,ehwd->hwcd', R, np.conj(R))
  return mean, cov, int(nfe)


def _sqrtm_psd(m):
  w, v = np.linalg.eigh(m)
  return (v * np.sqrt(np.clip(w, 0, None))[..., None, :]) @ np.conj(np.swapaxes(v, -1, -2))


def exact_frechet_distance(mean, cov, field) -> float:
  """Exact FD between N(mean, circulant cov) and the field (see the module docstring)."""
  s = np.asarray(field.spectrum, np.float64)                    # (H,W,C)
  mu = np.asarray(field.mean, np.float64)
  S_half = np.sqrt(s)[..., :, None] * np.eye(s.shape[-1])       # diag per mode
  inner = S_half @ cov @ S_half
  tr_cross = np.trace(_sqrtm_psd(0.5 * (inner + np.conj(np.swapaxes(inner, -1, -2)))),
                      axis1=-2, axis2=-1).real
  tr_k = np.trace(cov, axis1=-2, axis2=-1).real
  return float(np.sum(tr_k + s.sum(-1) - 2 * tr_cross) + np.sum((mean - mu) ** 2))


def output_spectrum_error(cov, field) -> float:
  """mean_k |log(K(k)_cc / s_c(k))|: the relative per-mode variance error."""
  s = np.asarray(field.spectrum, np.float64)
  var = np.real(np.diagonal(cov, axis1=-2, axis2=-1))
  return float(np.mean(np.abs(np.log(np.maximum(var, 1e-300) / s))))


def pf_ode_reference(sde, field, z_T, t_end: float, rtol: float = 1e-10, atol: float = 1e-12):
  """Exact probability-flow ODE solution of the oracle from T to t_end (float64 host).

  Per Fourier mode k the ODE dZ/dt = F_t Z - 1/2 G G^T S, S = -C_t(k)^{-1} (Z - m_t(k)),
  is affine; with Y = Z - m_t (m_t = Psi_t [F[mu]; 0] solves dm/dt = F m) it is linear,
  dY/dt = (F_t + 1/2 G G^T C_t(k)^{-1}) Y, so Z(t_end) = m_end + U_k Y(T) with the (k,k)
  fundamental matrix U_k, integrated by scipy (DOP853) for every mode at once.

  Args:
    sde: the SDE. field: the GaussianField. z_T: (B,H,W,kC) prior states.
    t_end: final time.
  Returns:
    z (B,H,W,kC) float64 at t_end.
  """
  sde = sde_lib.host_sde(sde)
  k = sde.block_dim
  z_T = np.asarray(z_T, np.float64)
  B, H, W, KC = z_T.shape
  C = KC // k
  T = float(sde.T)
  mu_hat = np.zeros((H, W, C))
  mu_hat[0, 0] = H * W * np.asarray(field.mean, np.float64)
  shape = (H, W, C, k, k)

  def rhs(t, y):
    U = y.reshape(shape)
    _, cov = field.mode_moments(sde, t)                          # (H,W,C,k,k)
    A = sde.drift_block(np.float64(t)) + 0.5 * sde.diffusion_block(np.float64(t)) @ np.linalg.inv(cov)
    return (A @ U).ravel()

  U0 = np.broadcast_to(np.eye(k), shape).ravel()
  sol = solve_ivp(rhs, (T, float(t_end)), U0, method='DOP853', rtol=rtol, atol=atol)
  U = sol.y[:, -1].reshape(shape)
  Z = np.fft.fft2(z_T.reshape(B, H, W, k, C), axes=(1, 2)).transpose(0, 1, 2, 4, 3)
  e_T, _ = field.mode_moments(sde, T)
  e_end, _ = field.mode_moments(sde, t_end)
  Y = Z - mu_hat[..., None] * e_T
  Z_end = mu_hat[..., None] * e_end + np.einsum('hwcij,bhwcj->bhwci', U, Y)
  Z_end = Z_end.transpose(0, 1, 2, 4, 3)
  return np.real(np.fft.ifft2(Z_end, axes=(1, 2))).reshape(B, H, W, KC)

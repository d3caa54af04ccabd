"""Conjugate integrators (Pandey, Rudolph & Mandt, "Efficient Integrators for Diffusion
Generative Models", ICLR 2024, Sec. 3) for every linear SDE of sde_lib.

Derivation
----------
For dz = F_t z dt + G_t dw the probability-flow ODE with the epsilon parameterisation
score = -L_t^{-T} eps (Sigma_t = L_t L_t^T, sde_lib) reads
    dz/dt = F_t z + 1/2 G_t G_t^T L_t^{-T} eps(z, t).                                  (1)
Map it to z_hat = A_t z with an invertible A_t solving dA/dt = B_t A - A F_t, A_0 = I:
    dz_hat/dt = B_t z_hat + dPhi_t/dt eps(A_t^{-1} z_hat, t),
    Phi_t = int_0^t 1/2 A_s G_s G_s^T L_s^{-T} ds                                    (2)
(an exact reparameterisation for any B_t). Euler in z_hat from t_i to t_{i+1} < t_i,
h = t_i - t_{i+1}, with eps frozen but Phi integrated exactly:
    z_hat_{i+1} = (I - h B) z_hat_i + (Phi_{t_{i+1}} - Phi_{t_i}) eps_i.                (3)
Back in z with R(t, s) = A_t^{-1} A_s and B~_t = A_t^{-1} B A_t (B in z coordinates):
    z_{i+1} = P_i z_i + Q_i eps_i,   P_i = (I - h B~_{i+1}) R(t_{i+1}, t_i),
    Q_i = int_{t_i}^{t_{i+1}} R(t_{i+1}, s) 1/2 G_s G_s^T L_s^{-T} ds.                  (4)
For B = lam I, A_t = e^{lam t} Psi(t, 0)^{-1}, so R(t, s) = e^{-lam (t - s)} Psi(t, s) and
B~ = lam I: no A is ever formed (Psi from sde_lib in closed form). B = 0 is the
exponential integrator; on VP, P = alpha_{i+1}/alpha_i and Q = sigma_{i+1} - alpha_{i+1}
sigma_i / alpha_i, i.e. DDIM exactly (Song et al. 2021); on VE it is x_{i+1} = x_i +
(sigma_{i+1} - sigma_i) eps_i. B = lam I is lambda-DDIM. The non-diagonal variant
b_matrix='ones' uses B = lam 1 1^T on the (x, m) block (our reading of the paper's
non-diagonal choice for PSLD); A_t then has no closed form and is integrated on the host
(scipy DOP853, rtol 1e-12).

Second order (eps varying linearly in t over the step, weights again exact):
  'heun'  (2 evaluations/step): predictor (4) to z*, eps* = eps(z*, t_{i+1}); then
          z_hat_{i+1} = z_hat_i - h/2 (B z_hat_i + B z_hat*) + (Phi_{i+1} - Phi_i - W_i) eps_i
          + W_i eps*, W_i = int Phi'(s) (s - t_i)/(t_{i+1} - t_i) ds (trapezoid on B z_hat).
  'ab2'   (1 evaluation/step, multistep, DEIS-style): eps extrapolated from (t_{i-1}, t_i),
          z_hat_{i+1} = z_hat_i - h ((1 + r/2) B z_hat_i - r/2 B z_hat_{i-1}) + (Phi_{i+1} -
          Phi_i + V_i) eps_i - V_i eps_{i-1}, V_i = int Phi'(s) (s - t_i)/(t_i - t_{i-1}) ds,
          r = h_i / h_{i-1}; the first step is (4).
All weights are (k,k) matrices computed once on the host in float64 by 24-point
Gauss-Legendre quadrature per step (the integrands are smooth for t >= eps > 0; the
denoising step to t = 0 substitutes s = t_N u^2 against the s^-1/2 endpoint), folded
with -L_t^T so that the jitted lax.scan applies them to the score directly.

`denoise` adds one step (4) from t_N = eps to 0 (one more evaluation); with B = 0 on VP it
returns Tweedie's E[x_0 | x_eps].

Natural eps frame (beyond the paper): eps_frame='natural' freezes eps in the square root of
Sigma_t that the probability-flow ODE transports instead of the Cholesky factor (EpsFrame);
only CLD/PSLD differ.

Spectral lambda-DDIM (beyond the paper)
---------------------------------------
b_matrix='spectral' takes B_t = lam Gamma, Gamma = F^-1 diag(g) F Fourier-diagonal per
channel with a gain g(k) > 0 (from PDS: g = r^2, r the PDS frequency gain, i.e. Gamma =
R^2 = M M^T without the space gain). Any B gives an exact conjugate of (1), so this is an
unbiased reparameterisation; each Fourier mode is lambda-DDIM with its own lambda_k =
lam g(k). The state is carried in Fourier space: one inverse FFT for the network input and
one forward FFT of its output per step.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from score_sde_pds import sde_lib
from score_sde_pds.integrators import common

B_MATRICES = ('identity', 'ones', 'spectral')
EPS_FRAMES = ('cholesky', 'natural')


@dataclasses.dataclass(frozen=True)
class Rule:
  """A conjugate rule: network evaluations per step, convergence order, step function."""
  nfe_per_step: int
  order: int
  step: Callable


CONJUGATE_RULES: dict[str, Rule] = {}


def register_rule(name, nfe_per_step, order):
  def deco(fn):
    if name in CONJUGATE_RULES:
      raise ValueError(f'conjugate rule {name!r} already registered')
    CONJUGATE_RULES[name] = Rule(nfe_per_step, order, fn)
    return fn
  return deco


# ----------------------------------------------------------------------------- host maths


class EpsFrame:
  """The square root S_t of Sigma_t (S S^T = Sigma_t) in which eps = -S_t^T score is frozen.

  'cholesky': S = L_t, the lower Cholesky factor (PSLD's parameterisation, the networks').
  'natural' (beyond the paper): S_t = L_t Rot(theta_t) with the rotation chosen so that
  dS/dt = F S + 1/2 G G^T S^{-T}, the square root that the probability-flow ODE itself
  transports: for a point-mass data distribution z_t = m_t + S_t eps along the exact ODE
  path with eps constant, so freezing eps is exact there (as DDIM is for VP). Writing
  S = L O, O O^T = I, the strictly upper part of O' O^T = L^{-1}(F L + 1/2 G G^T L^{-T}) - L^{-1} L'
  (L^{-1} L' is lower triangular) gives theta' = -(L^{-1}(F L + 1/2 G G^T L^{-T}))_12,
  theta_T = 0, integrated on the host (DOP853, rtol 1e-11). Between T = 1 and t = 1e-3 the
  Cholesky frame of PSLD/CLD turns by about 10 rad against it, which is what makes frozen
  Cholesky eps inaccurate. For 1x1 blocks both frames coincide.
  """

  def __init__(self, sde, frame='cholesky', t_min=1e-6):
    if frame not in EPS_FRAMES:
      raise ValueError(f'config.sampling.eps_frame={frame!r} is not known; valid: '
                       f'{list(EPS_FRAMES)}.')
    self.sde = sde_lib.host_sde(sde)
    self.natural = frame == 'natural' and self.sde.block_dim == 2
    if self.natural:
      self.sol = _natural_rotation(self.sde, float(t_min))

  def factor(self, t):
    t = np.asarray(t, np.float64)
    L = self.sde.chol_block(t)
    if not self.natural:
      return L
    th = self.sol(t.ravel())[0].reshape(t.shape)
    c, s = np.cos(th), np.sin(th)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return L @ rot


_ROTATIONS = {}


def _natural_rotation(hs, t_min):
  """theta_t of EpsFrame('natural') on [t_min, T] (scipy dense output), memoised per SDE
  parameters and t_min: every sampler built on the same SDE and grid end reuses it."""
  key = (type(hs).__name__, tuple(float(v) for v in jax.tree.leaves(hs)), t_min)
  if key not in _ROTATIONS:

    def rhs(t, y):
      t = np.float64(t)
      L = hs.chol_block(t)
      Li = np.linalg.inv(L)
      M = hs.drift_block(t) @ L + 0.5 * hs.diffusion_block(t) @ Li.T
      return [-(Li @ M)[0, 1]]

    _ROTATIONS[key] = solve_ivp(rhs, (float(hs.T), t_min), [0.], method='DOP853', rtol=1e-11,
                                atol=1e-12, dense_output=True).sol
  return _ROTATIONS[key]


def _kernel(sde, s, frame=None):
  """1/2 G_s G_s^T S_s^{-T} (S = the eps frame's factor), s (...) -> (..., k, k)."""
  S = frame.factor(s) if frame is not None else sde.chol_block(s)
  return 0.5 * sde.diffusion_block(s) @ sde_lib.block_inv(sde_lib.block_transpose(S))


class _Transform:
  """R(t, s) = A_t^{-1} A_s and B~_t = A_t^{-1} B A_t of dA/dt = B A - A F_t, A_0 = I.

  B = lam_u I (one lam per Fourier-mode class u, lam_vec (n_u,)) in closed form, or
  B = lam 1 1^T by an ODE solve. Outputs carry an n_u axis before the (k, k) block.
  """

  def __init__(self, sde, lam_vec, b_matrix):
    self.sde, self.k = sde, sde.block_dim
    self.lam = np.asarray(lam_vec, np.float64).reshape(-1)
    self.general = b_matrix == 'ones' and self.k > 1 and np.any(self.lam != 0)
    if self.general:
      if self.lam.size != 1:
        raise ValueError("b_matrix='ones' takes one lam")
      k = self.k
      self.B = self.lam[0] * np.ones((k, k))

      def rhs(t, y):
        A = y.reshape(k, k)
        return (self.B @ A - A @ sde.drift_block(np.float64(t))).ravel()

      self.sol = solve_ivp(rhs, (0., float(sde.T)), np.eye(k).ravel(), method='DOP853',
                           rtol=1e-12, atol=1e-14, dense_output=True)

  def _A(self, t):
    t = np.asarray(t, np.float64)
    return np.moveaxis(self.sol.sol(t.ravel()), 0, -1).reshape(t.shape + (self.k, self.k))

  def rel(self, t, s):
    if self.general:
      t, s = np.broadcast_arrays(np.asarray(t, np.float64), np.asarray(s, np.float64))
      return (np.linalg.inv(self._A(t)) @ self._A(s))[..., None, :, :]
    t, s = np.broadcast_arrays(np.asarray(t, np.float64), np.asarray(s, np.float64))
    scal = np.exp(-self.lam * (t - s)[..., None])                  # (..., n_u)
    return scal[..., None, None] * self.sde.transition_block(t, s)[..., None, :, :]

  def bz(self, t):
    t = np.asarray(t, np.float64)
    if self.general:
      A = self._A(t)
      return (np.linalg.inv(A) @ self.B @ A)[..., None, :, :]
    return self.lam[:, None, None] * np.broadcast_to(np.eye(self.k), t.shape + (1, self.k, self.k))


def conjugate_coefficients(sde, ts, *, lam=0., b_matrix='identity', rule='euler',
                           denoise=False, lam_vec=None, eps_frame='cholesky', nq=24) -> dict:
  """Per-step matrices of a conjugate rule on the grid ts (host, float64).

  Args:
    sde: the SDE. ts: (N + 1,) descending times.
    lam, b_matrix: B = lam I ('identity'), lam 1 1^T ('ones'); for 'spectral' pass
      lam_vec (n_u,), one lambda per class of Fourier modes.
    rule: 'euler' | 'heun' | 'ab2'. denoise: add the step t_N -> 0.
    eps_frame: 'cholesky' | 'natural' (EpsFrame): the frame in which eps is frozen.
  Returns:
    dict of arrays, leading axis N (steps), then n_u (only for 'spectral'), then (k, k);
    keys per rule (see the step functions), plus 'Pd', 'Qd' for denoise.
  """
  sde = sde_lib.host_sde(sde)
  ts = np.asarray(ts, np.float64)
  k, N = sde.block_dim, len(ts) - 1
  spectral = b_matrix == 'spectral'
  tr = _Transform(sde, lam_vec if spectral else [lam], b_matrix)
  frame = EpsFrame(sde, eps_frame, t_min=ts[-1] * (1e-7 if denoise else 0.5))
  eye = np.eye(k)
  ta, tb = ts[:-1], ts[1:]
  h = (ta - tb)[:, None, None, None]
  s, w = common.gl_nodes(ta, tb, nq)                            # (N, nq)
  RK = tr.rel(tb[:, None], s) @ _kernel(sde, s, frame)[:, :, None]   # (N, nq, n_u, k, k)
  Q = np.einsum('nq,nquij->nuij', w, RK)
  M1 = np.einsum('nq,nquij->nuij', w * (s - ta[:, None]), RK)
  R1 = tr.rel(tb, ta)                                           # (N, n_u, k, k)
  Bz1 = tr.bz(tb)
  LT = sde_lib.block_transpose(frame.factor(ts))[:, None]       # (N + 1, 1, k, k)
  P = (eye - h * Bz1) @ R1
  out = {'t': ts[:-1], 't_next': ts[1:]}
  if rule == 'euler':
    out.update(P=P, Qs=-Q @ LT[:-1])
  elif rule == 'heun':
    Wt = M1 / (tb - ta)[:, None, None, None]
    out.update(P=P, Qs=-Q @ LT[:-1], C1=(eye - h / 2 * Bz1) @ R1, C2=-h / 2 * Bz1,
               C3s=-(Q - Wt) @ LT[:-1], C4s=-Wt @ LT[1:])
  elif rule == 'ab2':
    D1, D2, D3s, D4s = P.copy(), np.zeros_like(P), -Q @ LT[:-1], np.zeros_like(P)
    if N > 1:
      hp = (ts[:-2] - ts[1:-1])[:, None, None, None]            # h_{i-1}, i >= 1
      r = h[1:] / hp
      V = M1[1:] / (ta[1:] - ts[:-2])[:, None, None, None]
      D1[1:] = (eye - h[1:] * (1. + r / 2) * Bz1[1:]) @ R1[1:]
      D2[1:] = (h[1:] * r / 2) * Bz1[1:] @ tr.rel(tb[1:], ts[:-2])
      D3s[1:] = -(Q[1:] + V) @ LT[1:-1]
      D4s[1:] = V @ LT[:-2]
    out.update(D1=D1, D2=D2, D3s=D3s, D4s=D4s)
  else:
    raise ValueError(f'config.sampling.integrator={rule!r} is not a conjugate rule; valid: '
                     f'{sorted(CONJUGATE_RULES)}.')
  if denoise:
    sd, wd = common.gl_nodes_from_zero(ts[-1], nq)             # int_0^{t_N}
    Qd = -np.einsum('q,quij->uij', wd, tr.rel(0., sd) @ _kernel(sde, sd, frame)[:, None])
    Pd = (eye - ts[-1] * tr.bz(0.)) @ tr.rel(0., ts[-1])
    out.update(Pd=Pd, Qds=-Qd @ LT[-1])
  if not spectral:   # drop the n_u axis
    out = {key: (v[:, 0] if v.ndim == 4 else v[0] if v.ndim == 3 else v) for key, v in out.items()}
  return out


# ----------------------------------------------------------------------------- step rules
# step(ctx, carry, c, k) -> carry; carry[0] = z (B,...,kC); c = this step's coefficients.

ab = sde_lib.apply_block


@register_rule('euler', nfe_per_step=1, order=1)
def euler_step(ctx, carry, c, k):
  """(4): z <- P z + Q eps = P z - Q L^T s (exponential integrator / lambda-DDIM)."""
  z = carry[0]
  s = ctx.score(z, c['t'])
  return (ab(c['P'], z) + ab(c['Qs'], s),)


@register_rule('heun', nfe_per_step=2, order=2)
def heun_step(ctx, carry, c, k):
  """Predictor (4), then the trapezoidal corrector with exact eps weights."""
  z = carry[0]
  s = ctx.score(z, c['t'])
  z_pred = ab(c['P'], z) + ab(c['Qs'], s)
  s2 = ctx.score(z_pred, c['t_next'])
  return (ab(c['C1'], z) + ab(c['C2'], z_pred) + ab(c['C3s'], s) + ab(c['C4s'], s2),)


@register_rule('ab2', nfe_per_step=1, order=2)
def ab2_step(ctx, carry, c, k):
  """Two-step Adams-Bashforth in z_hat with exact eps weights; carry (z, z_prev, s_prev)."""
  z, z_prev, s_prev = carry
  s = ctx.score(z, c['t'])
  z_new = ab(c['D1'], z) + ab(c['D2'], z_prev) + ab(c['D3s'], s) + ab(c['D4s'], s_prev)
  return (z_new, z, s)


# ----------------------------------------------------------------------------- spectral


def _fft(v):
  return jnp.fft.fft2(v, axes=(-3, -2))


def _ifft(v):
  return jnp.fft.ifft2(v, axes=(-3, -2))


def _modes_apply(Qg, V, k):
  """Per-mode (k,k) blocks Qg (H,W,C,k,k) applied to V (B,H,W,kC) (complex)."""
  B, H, W, KC = V.shape
  C = KC // k
  v = V.reshape(B, H, W, k, C)
  out = jnp.einsum('hwcij,bhwjc->bhwic', Qg.astype(V.dtype), v)
  return out.reshape(V.shape)


def _spectral_classes(gain, lam):
  """Unique lambda_k = lam * gain(k) classes: (lam_vec (n_u,), index (H,W,C))."""
  g = np.asarray(gain, np.float64)
  if g.ndim != 3 or not np.all(np.isfinite(g)) or np.any(g <= 0):
    raise ValueError('the spectral gain must be a positive (H, W, C) array (from the PDS '
                     'frequency statistics: config.sampling.pds.*), got shape '
                     f'{g.shape}.')
  vals, idx = np.unique(np.round(g, 12), return_inverse=True)
  return lam * vals, idx.reshape(g.shape)


# ----------------------------------------------------------------------------- factory


def get_conjugate_sampler(sde, shape, *, num_steps, lam=0.0, grid='uniform', eps=1e-3,
                          denoise=False, rule='euler', b_matrix='identity',
                          spectral_gain=None, eps_frame='cholesky', noise_source=None,
                          preconditioner=None):
  """Conjugate-integrator sampler of the probability-flow ODE (module docstring).

  Args:
    sde: any sde_lib SDE with a block description (VP, subVP, VE, CLD, PSLD).
    shape: data shape (B, H, W, C); the state is (B, H, W, k C) (k = sde.block_dim).
    num_steps: N steps on the time grid `grid` ('uniform': t_i = T - i (T - eps) / N).
    lam: lambda of B (0: exponential integrator, DDIM on VP).
    eps: final time. denoise: one more step eps -> 0.
    rule: 'euler' (1 evaluation/step), 'heun' (2), 'ab2' (1).
    b_matrix: 'identity' (B = lam I), 'ones' (B = lam 1 1^T), 'spectral' (B = lam Gamma,
      Gamma Fourier-diagonal with gain `spectral_gain` (H, W, C); 'euler' only).
    eps_frame: 'cholesky' (the paper's) or 'natural' (EpsFrame; CLD/PSLD only differ).
    noise_source: replaces the prior draw (see common.make_sampler).
  Returns:
    sampling.Sampler: sampler(rng, score_fn) -> (x (B,H,W,C), nfe); score_fn(z, t) is the
    score of the (augmented) state z (B,H,W,kC); for CLD/PSLD x is the data part of z.
  """
  shape = tuple(int(v) for v in shape)
  common.check_common(sde, shape, num_steps, eps, grid)
  if rule not in CONJUGATE_RULES:
    raise ValueError(f'config.sampling.integrator={rule!r} is not a conjugate rule; valid: '
                     f'{sorted(CONJUGATE_RULES)}.')
  if b_matrix not in B_MATRICES:
    raise ValueError(f'config.sampling.b_matrix={b_matrix!r} is not known; valid: '
                     f'{list(B_MATRICES)}.')
  lam = float(lam)
  if not np.isfinite(lam):
    raise ValueError(f'config.sampling.lam must be finite, got {lam!r}.')
  if eps_frame not in EPS_FRAMES:
    raise ValueError(f'config.sampling.eps_frame={eps_frame!r} is not known; valid: '
                     f'{list(EPS_FRAMES)}.')
  ts = common.time_grid(sde, int(num_steps), float(eps), grid)
  k = sde.block_dim
  r = CONJUGATE_RULES[rule]
  nfe = r.nfe_per_step * int(num_steps) + int(bool(denoise))
  if b_matrix != 'spectral':
    co = conjugate_coefficients(sde, ts, lam=lam, b_matrix=b_matrix, rule=rule, denoise=denoise,
                                eps_frame=eps_frame)
    xs = {key: v for key, v in co.items() if key not in ('Pd', 'Qds')}
    fin = common.f32({key: co[key] for key in ('Pd', 'Qds') if key in co})
    t_last = float(ts[-1])

    def init(ctx, z):
      if rule == 'ab2':
        return (z, jnp.zeros_like(z), jnp.zeros_like(z))
      return (z,)

    def finish(ctx, carry):
      z = carry[0]
      if denoise:
        z = ab(fin['Pd'], z) + ab(fin['Qds'], ctx.score(z, t_last))
      return z

    sampler = common.make_sampler(sde, shape, num_steps=int(num_steps), nfe=nfe, xs=xs,
                                  init=init, step=r.step, finish=finish,
                                  noise_source=noise_source, preconditioner=preconditioner)
    sampler.grid = ts
    return sampler

  # spectral lambda-DDIM: Fourier-space state, per-mode coefficients
  if rule != 'euler':
    raise ValueError("config.sampling.b_matrix='spectral' supports integrator='euler' only.")
  if spectral_gain is None:
    raise ValueError("config.sampling.b_matrix='spectral' needs the PDS frequency statistics "
                     '(config.sampling.pds.enabled=True with freq_stats, or the oracle).')
  gain = np.broadcast_to(np.asarray(spectral_gain, np.float64), shape[1:])
  lam_vec, idx = _spectral_classes(gain, lam)
  co = conjugate_coefficients(sde, ts, b_matrix='spectral', rule='euler', denoise=denoise,
                              lam_vec=lam_vec, eps_frame=eps_frame)
  h = ts[:-1] - ts[1:]
  # P = (1 - h lam_u) e^{lam_u h} Psi(t_{i+1}, t_i): a scalar per class times a shared block
  p_scal = (1. - h[:, None] * lam_vec) * np.exp(lam_vec * h[:, None])           # (N, n_u)
  psi = sde_lib.host_sde(sde).transition_block(ts[1:], ts[:-1])                 # (N, k, k)
  xs = {'t': ts[:-1], 'p': p_scal, 'psi': psi, 'Qs': co['Qs']}
  idx_j = jnp.asarray(idx)
  fin = None
  if denoise:
    pd = (1. - ts[-1] * lam_vec) * np.exp(lam_vec * ts[-1])
    fin = common.f32({'p': pd, 'psi': sde_lib.host_sde(sde).transition_block(0., ts[-1]),
                      'Qs': co['Qds']})
  t_last = float(ts[-1])

  def spectral_update(Z, S, c):
    pk = jnp.tile(c['p'][idx_j], (1, 1, k))                                      # (H,W,kC)
    return pk * ab(c['psi'], Z) + _modes_apply(c['Qs'][idx_j], S, k)

  def init(ctx, z):
    return (_fft(z),)

  def step(ctx, carry, c, kk):
    Z = carry[0]
    z = jnp.real(_ifft(Z))
    s = ctx.score(z, c['t'])
    return (spectral_update(Z, _fft(s), c),)

  def finish(ctx, carry):
    Z = carry[0]
    if denoise:
      z = jnp.real(_ifft(Z))
      Z = spectral_update(Z, _fft(ctx.score(z, t_last)), fin)
    return jnp.real(_ifft(Z))

  sampler = common.make_sampler(sde, shape, num_steps=int(num_steps), nfe=nfe, xs=xs,
                                init=init, step=step, finish=finish, noise_source=noise_source,
                                preconditioner=preconditioner)
  sampler.grid, sampler.spectral_classes = ts, int(lam_vec.size)
  return sampler

"""Splitting integrators for the phase-space SDEs CLD and PSLD (Pandey, Rudolph & Mandt,
ICLR 2024, Sec. 4 and "Towards Fast Stochastic Sampling in Diffusion Generative Models";
Dockhorn et al. 2022 for SSCS).

Derivation
----------
Write the state z = [x; m] (sde_lib: 2x2 blocks, F_t = beta(t) K, G G^T = beta(t) diag(D),
prior covariance P = diag(1, M)) and use forward time t, stepping from t_a to t_b = t_a - h.
With a noise scale lam_s >= 0 (lam_s = 1: the reverse SDE; 0: the probability-flow ODE)
    dz = [F z - (1 + lam_s^2)/2 G G^T s] dt + lam_s G dw_bar
has the marginals p_t for every lam_s. Split its vector field into
    A  (x row of the flow):      dx = [F_xx x + F_xm m - 1/2 g_x s_x] dt
    B  (m row of the flow):      dm = [F_mx x + F_mm m - 1/2 g_m s_m] dt
    O  (Langevin at fixed t):    dz = -lam_s^2/2 G G^T s dt + lam_s G dw_bar,
i.e. in reverse time tau, dz = lam_s^2/2 G G^T s dtau + lam_s G dw: overdamped Langevin
dynamics that leave p_t invariant. A + B is the probability-flow ODE, so every
composition is consistent. Sub-steps, each an affine map z <- U z + V s (+ W xi):
  A_h, B_h (Euler, score frozen):  z_r <- z_r - h (F z - 1/2 G G^T s)_r on row r only;
  O_h:                           z <- z + h lam_s^2/2 G G^T s + lam_s sqrt(h) G xi;
  A*_h, B*_h (conjugate sub-flow): the row's linear ODE solved exactly with eps frozen
      (s = -L^{-T} eps), other row frozen, optionally lambda-DDIM in that row:
      z_r(t_b) = (1 - h lam) e^{lam h} e^{K_rr (b_b - b_a)} z_r(t_a)
               + int_{t_a}^{t_b} e^{-lam (t_b - u)} e^{K_rr (b_b - b(u))} [beta(u) K_ro z_o
                 + 1/2 (G G^T L^{-T})_{r,:}(u) eps] du        (b = int_0^t beta),
      (the conjugate integrator of conjugate.py applied to one row).
"Naive" schemes evaluate the network before every sub-step that needs it; "reduced" ones
evaluate it once per step and reuse it (the score of the step's start, or, for the
velocity-Verlet form, the last evaluation, carried to the next step; NFE = N + 1).

Schemes (N steps; NFE per step for PSLD, CLD in brackets where A needs no score, g_x = 0):
  deterministic (probability-flow ODE):
    'nse'   naive symplectic Euler   A_h, B_h                         2 [1]   order 1
    'nvv'   naive velocity Verlet    B_h/2, A_h (t mid), B_h/2 (t_b)  3 [2]   order 1*
    'rse'   reduced symplectic Euler  one score for A_h, B_h           1       order 1
    'rvv'   reduced velocity Verlet   B_h/2, A_h with the carried score, evaluate at
                                      (x_b, m_1/2, t_b), B_h/2 with it; carried  1 (+1)
    'cvv'   conjugate velocity Verlet (the hybrid): 'rvv' with the exact sub-flows
                                      B*_h/2, A*_h, B*_h/2 (and `lam`)   1 (+1)
  stochastic (reverse SDE scaled by noise_scale = lam_s):
    'oba'   naive OBA                 O_h, B_h, A_h                     3 [2]   weak 1
    'baoab' naive BAOAB               B_h/2 A_h/2 O_h A_h/2 B_h/2       5 [3]   weak 1*
    'roba'  reduced OBA               one score for O_h, B_h, A_h        1       weak 1
    'sscs'  symmetric splitting CLD sampler (Dockhorn et al.): with the prior score
            -P^{-1} z split off, L_h/2 S_h L_h/2 where L is the linear reverse SDE
            dz = (F + c G G^T P^{-1}) z dt + lam_s G dw_bar solved exactly (mean map and
            Gaussian noise, c = (1 + lam_s^2)/2) and S: z <- z + h c G G^T (s + P^{-1} z)
            at the midpoint                                              1       weak 1
  (*: Strang compositions of first-order sub-steps; only an exactly solved sub-flow
  makes them second order. Orders are measured in tests/test_integrators.py.)

PDS in the O part (beyond the paper): with a preconditioner M (spatial, applied to the
x and the m channels alike) the O step becomes z <- z + h lam_s^2/2 G G^T (M M^T s) +
lam_s sqrt(h) G (M xi): Langevin dynamics with preconditioner G G^T (x) M M^T, which still
leaves p_t invariant (PDS Theorem 1), so the scheme stays consistent.

All U, V, W are (2,2) blocks computed once on the host in float64 (24-point
Gauss-Legendre quadrature for the conjugate sub-flows, the closed-form 2x2 matrix
exponential `expm2` and quadrature for SSCS's Ornstein-Uhlenbeck part) and applied in a
jitted lax.scan.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from score_sde_pds import sde_lib
from score_sde_pds.integrators import common

ab = sde_lib.apply_block


@dataclasses.dataclass(frozen=True)
class Stage:
  """One sub-step. kind 'eval': s = score(z, xs[t]); kind 'lin': z = U z + V s + W xi."""
  kind: str
  t: str = ''
  U: str = ''
  V: str = ''
  W: str = ''
  tag: int = -1
  precond: bool = False


@dataclasses.dataclass(frozen=True)
class Scheme:
  build: Callable        # build(geo) -> (stages, init_eval)
  stochastic: bool
  order: int             # expected (strong for deterministic, weak for stochastic) order


SPLITTING_SCHEMES: dict[str, Scheme] = {}


def register_scheme(name, stochastic, order):
  def deco(fn):
    if name in SPLITTING_SCHEMES:
      raise ValueError(f'splitting scheme {name!r} already registered')
    SPLITTING_SCHEMES[name] = Scheme(fn, stochastic, order)
    return fn
  return deco


# ----------------------------------------------------------------------------- host maths


def expm2(A):
  """exp(A) of real (..., 2, 2) blocks in closed form (host, float64).

  With s = tr(A) / 2, Q = A - s I (Q^2 = d^2 I, d^2 = s^2 - det A, Cayley-Hamilton):
  exp(A) = e^s (cosh(d) I + sinh(d) / d Q), real for either sign of d^2 (d imaginary:
  cos, sin). Written out because scipy.linalg.expm handles one matrix per call, which
  cost seconds for the (N, nq) quadrature blocks of SSCS.
  """
  A = np.asarray(A, np.float64)
  s = 0.5 * (A[..., 0, 0] + A[..., 1, 1])
  Q = A - s[..., None, None] * np.eye(2)
  d2 = -(Q[..., 0, 0] * Q[..., 1, 1] - Q[..., 0, 1] * Q[..., 1, 0])
  d = np.sqrt(d2.astype(np.complex128))
  small = np.abs(d) < 1e-4
  ds = np.where(small, 1., d)
  ch = np.where(small, 1. + d2 / 2 + d2 ** 2 / 24, np.cosh(ds)).real
  sh = np.where(small, 1. + d2 / 6 + d2 ** 2 / 120, np.sinh(ds) / ds).real
  return np.exp(s)[..., None, None] * (ch[..., None, None] * np.eye(2) + sh[..., None, None] * Q)


class Geometry:
  """Per-step host coefficient builders on the grid ts (every array (N, 2, 2))."""

  def __init__(self, sde, ts, noise_scale=1.0, lam=0.0, eps_frame='cholesky', nq=24):
    self.sde = sde_lib.host_sde(sde)
    self.ts = np.asarray(ts, np.float64)
    self.eps_frame = eps_frame
    self._frame = None
    self.ta, self.tb = self.ts[:-1], self.ts[1:]
    self.tm = 0.5 * (self.ta + self.tb)
    self.h = self.ta - self.tb
    self.ls = float(noise_scale)
    self.lam = float(lam)
    self.nq = nq
    self.xs: dict[str, np.ndarray] = {'ta': self.ta, 'tb': self.tb, 'tm': self.tm}
    self._n = 0

  def add(self, arr):
    """Registers a (N, 2, 2) coefficient array; returns its key."""
    key = f'c{self._n}'
    self._n += 1
    self.xs[key] = np.asarray(arr, np.float64)
    return key

  def t_key(self, which):
    return {'a': 'ta', 'b': 'tb', 'm': 'tm'}[which]

  def _t(self, which):
    return self.xs[self.t_key(which)]

  @staticmethod
  def _sel(row):
    e = np.zeros((2, 2))
    e[row, row] = 1.
    return e

  # -- Euler sub-steps (frozen score) --------------------------------------------------

  def euler_row(self, row, t_coef, frac=1.0):
    """Row `row` (0: x, 1: m) of z <- z - h (F z - 1/2 G G^T s), coefficients at t_coef."""
    t = self._t(t_coef)
    h = (frac * self.h)[:, None, None]
    E = self._sel(row)
    U = np.eye(2) - h * (E @ self.sde.drift_block(t))
    V = h / 2 * (E @ self.sde.diffusion_block(t))
    return U, V

  def o_step(self, t_coef, frac=1.0):
    """O: z <- z + h lam_s^2/2 G G^T s + lam_s sqrt(h) G xi, at t_coef."""
    t = self._t(t_coef)
    h = (frac * self.h)[:, None, None]
    GG = self.sde.diffusion_block(t)
    U = np.broadcast_to(np.eye(2), GG.shape)
    return U, h * self.ls ** 2 / 2 * GG, self.ls * np.sqrt(h) * np.sqrt(GG)

  # -- conjugate (exact) sub-flows, frozen eps ------------------------------------------

  @property
  def frame(self):
    if self._frame is None:
      from score_sde_pds.integrators.conjugate import EpsFrame
      self._frame = EpsFrame(self.sde, self.eps_frame, t_min=0.5 * self.ts[-1])
    return self._frame

  def exact_row(self, row, t_from, t_to, t_eps):
    """Row `row` solved exactly from t_from to t_to with the other row and eps frozen
    (eps from the score evaluated at t_eps: eps = -L^T s); lambda-DDIM in that row."""
    sde, lam = self.sde, self.lam
    ta, tb, te = self._t(t_from), self._t(t_to), self._t(t_eps)
    o = 1 - row
    K = sde._K(np)
    hs = (ta - tb)
    bb = sde._int_beta(tb)
    u, w = common.gl_nodes(ta, tb, self.nq)                         # (N, nq)
    decay = np.exp(-lam * (tb[:, None] - u) + K[row, row] * (bb[:, None] - sde._int_beta(u)))
    L = self.frame.factor(u)
    ker = 0.5 * sde.diffusion_block(u) @ sde_lib.block_inv(sde_lib.block_transpose(L))
    v_eps = np.einsum('nq,nqj->nj', w * decay, ker[..., row, :])   # (N, 2)
    u_o = np.einsum('nq,nq->n', w * decay, sde._beta(u) * K[row, o])
    U = np.broadcast_to(np.eye(2), (len(ta), 2, 2)).copy()
    U[:, row, row] = (1. - hs * lam) * np.exp(lam * hs) * np.exp(K[row, row] *
                                                                 (bb - sde._int_beta(ta)))
    U[:, row, o] = u_o
    V = np.zeros_like(U)
    LTe = sde_lib.block_transpose(self.frame.factor(te))
    V[:, row, :] = -np.einsum('nj,nji->ni', v_eps, LTe)            # acts on the score
    return U, V

  # -- SSCS (Dockhorn et al.) -----------------------------------------------------------

  def sscs_linear(self, t_from, t_to):
    """Exact linear reverse SDE dz = (F + c G G^T P^-1) z dt + lam_s G dw_bar, t_from ->
    t_to: (T, W) with z <- T z + W xi, W the Cholesky factor of the noise covariance."""
    sde = self.sde
    c = (1. + self.ls ** 2) / 2
    K, d = sde._K(np), sde._D(np)
    D = np.diag(d)
    J = K + c * D @ np.linalg.inv(np.asarray(sde.prior_cov_block()))
    db = sde._int_beta(self._t(t_from)) - sde._int_beta(self._t(t_to))  # (N,) > 0
    T = expm2(-J * db[:, None, None])
    if self.ls == 0:
      return T, np.zeros_like(T)
    u, w = common.gl_nodes(np.zeros_like(db), db, self.nq)
    E = expm2(-J * u[..., None, None])                              # (N, nq, 2, 2)
    Qn = self.ls ** 2 * np.einsum('nq,nqij->nij', w, E @ D @ sde_lib.block_transpose(E))
    return T, sde_lib.block_chol(Qn)

  def sscs_score(self, t_coef):
    """S: z <- z + h c G G^T (s + P^-1 z) at t_coef."""
    sde = self.sde
    c = (1. + self.ls ** 2) / 2
    GG = sde.diffusion_block(self._t(t_coef))
    h = self.h[:, None, None]
    Pinv = np.linalg.inv(np.asarray(sde.prior_cov_block()))
    return np.eye(2) + h * c * GG @ Pinv, h * c * GG


# stage helpers


def _lin(geo, U, V=None, W=None, tag=-1, precond=False):
  return Stage('lin', U=geo.add(U), V=geo.add(V) if V is not None and np.any(V != 0) else '',
               W=geo.add(W) if W is not None and np.any(W != 0) else '', tag=tag,
               precond=precond)


def _eval(geo, which):
  return Stage('eval', t=geo.t_key(which))


def _prune(stages):
  """Drops evaluations whose score no later stage reads before the next evaluation."""
  out = []
  for i, st in enumerate(stages):
    if st.kind == 'eval':
      used = False
      for nxt in stages[i + 1:]:
        if nxt.kind == 'eval':
          break
        if nxt.V:
          used = True
          break
      if not used:
        continue
    out.append(st)
  return out


# ----------------------------------------------------------------------------- schemes
# build(geo) -> (stages, init_eval). Rows: 0 = x (A), 1 = m (B).


@register_scheme('nse', stochastic=False, order=1)
def _nse(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.euler_row(0, 'a')),
          _eval(geo, 'b'), _lin(geo, *geo.euler_row(1, 'b'))], False


@register_scheme('rse', stochastic=False, order=1)
def _rse(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.euler_row(0, 'a')),
          _lin(geo, *geo.euler_row(1, 'a'))], False


@register_scheme('nvv', stochastic=False, order=1)
def _nvv(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.euler_row(1, 'a', 0.5)),
          _eval(geo, 'm'), _lin(geo, *geo.euler_row(0, 'm')),
          _eval(geo, 'b'), _lin(geo, *geo.euler_row(1, 'b', 0.5))], False


@register_scheme('rvv', stochastic=False, order=1)
def _rvv(geo):
  return [_lin(geo, *geo.euler_row(1, 'a', 0.5)), _lin(geo, *geo.euler_row(0, 'm')),
          _eval(geo, 'b'), _lin(geo, *geo.euler_row(1, 'b', 0.5))], True


@register_scheme('cvv', stochastic=False, order=1)
def _cvv(geo):
  return [_lin(geo, *geo.exact_row(1, 'a', 'm', 'a')), _lin(geo, *geo.exact_row(0, 'a', 'b', 'a')),
          _eval(geo, 'b'), _lin(geo, *geo.exact_row(1, 'm', 'b', 'b'))], True


@register_scheme('oba', stochastic=True, order=1)
def _oba(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.o_step('a'), tag=0, precond=True),
          _eval(geo, 'a'), _lin(geo, *geo.euler_row(1, 'a')),
          _eval(geo, 'a'), _lin(geo, *geo.euler_row(0, 'a'))], False


@register_scheme('baoab', stochastic=True, order=1)
def _baoab(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.euler_row(1, 'a', 0.5)),
          _eval(geo, 'a'), _lin(geo, *geo.euler_row(0, 'a', 0.5)),
          _eval(geo, 'm'), _lin(geo, *geo.o_step('m'), tag=0, precond=True),
          _eval(geo, 'm'), _lin(geo, *geo.euler_row(0, 'm', 0.5)),
          _eval(geo, 'b'), _lin(geo, *geo.euler_row(1, 'b', 0.5))], False


@register_scheme('roba', stochastic=True, order=1)
def _roba(geo):
  return [_eval(geo, 'a'), _lin(geo, *geo.o_step('a'), tag=0, precond=True),
          _lin(geo, *geo.euler_row(1, 'a')), _lin(geo, *geo.euler_row(0, 'a'))], False


@register_scheme('sscs', stochastic=True, order=1)
def _sscs(geo):
  T1, W1 = geo.sscs_linear('a', 'm')
  T2, W2 = geo.sscs_linear('m', 'b')
  return [_lin(geo, T1, None, W1, tag=0), _eval(geo, 'm'), _lin(geo, *geo.sscs_score('m')),
          _lin(geo, T2, None, W2, tag=1)], False


# ----------------------------------------------------------------------------- factory


def splitting_plan(sde, ts, integrator, noise_scale=1.0, lam=0.0, eps_frame='cholesky'):
  """(stages, init_eval, xs) of a scheme on the grid ts (host, float64)."""
  geo = Geometry(sde, ts, noise_scale=noise_scale, lam=lam, eps_frame=eps_frame)
  stages, init_eval = SPLITTING_SCHEMES[integrator].build(geo)
  stages = _prune(stages)
  if init_eval and not any(st.kind == 'lin' and st.V for st in stages[:next(
      (i for i, st in enumerate(stages) if st.kind == 'eval'), len(stages))]):
    init_eval = False
  return stages, init_eval, geo.xs


def get_splitting_sampler(sde, shape, *, integrator, num_steps, eps=1e-3, grid='uniform',
                          noise_scale=1.0, lam=0.0, eps_frame='cholesky', noise_source=None,
                          preconditioner=None):
  """Splitting-integrator sampler for CLD/PSLD (module docstring).

  Args:
    sde: sde_lib.CLDSDE or PSLDSDE.
    shape: data shape (B, H, W, C); the state is [x; m] (B, H, W, 2C).
    integrator: a key of SPLITTING_SCHEMES.
    num_steps: N steps on `grid` ('uniform': t_i = T - i (T - eps) / N). eps: final time.
    noise_scale: lam_s of the stochastic schemes (1: reverse SDE, 0: deterministic).
    lam: lambda-DDIM parameter of the conjugate sub-flows ('cvv').
    eps_frame: frame of the frozen eps of the conjugate sub-flows (conjugate.EpsFrame).
    noise_source: replaces the Gaussian draws (common.make_sampler).
    preconditioner: default PDS Preconditioner of the O steps (None: plain); a per-call
      one can be passed to run() / __call__.
  Returns:
    sampling.Sampler: sampler(rng, score_fn) -> (x (B,H,W,C), nfe), score_fn(z, t) the
    score of the stacked state (B,H,W,2C); x is the data part of the final state.
  """
  shape = tuple(int(v) for v in shape)
  common.check_common(sde, shape, num_steps, eps, grid)
  if not getattr(sde, 'is_augmented', False):
    raise ValueError('splitting integrators (config.sampling.method=splitting) need a '
                     "phase-space SDE: config.training.sde must be 'cld' or 'psld', got "
                     f'{type(sde).__name__}.')
  if integrator not in SPLITTING_SCHEMES:
    raise ValueError(f'config.sampling.integrator={integrator!r} is not a splitting scheme; '
                     f'valid: {sorted(SPLITTING_SCHEMES)}.')
  try:
    noise_scale, lam = float(noise_scale), float(lam)
  except (TypeError, ValueError):
    raise ValueError('config.sampling.noise_scale and config.sampling.lam must be numbers, got '
                     f'{noise_scale!r}, {lam!r}.') from None
  if not (np.isfinite(noise_scale) and noise_scale >= 0):
    raise ValueError(f'config.sampling.noise_scale must be >= 0, got {noise_scale!r}.')
  if not np.isfinite(lam):
    raise ValueError(f'config.sampling.lam must be finite, got {lam!r}.')
  ts = common.time_grid(sde, int(num_steps), float(eps), grid)
  from score_sde_pds.integrators.conjugate import EPS_FRAMES
  if eps_frame not in EPS_FRAMES:
    raise ValueError(f'config.sampling.eps_frame={eps_frame!r} is not known; valid: '
                     f'{list(EPS_FRAMES)}.')
  stages, init_eval, xs = splitting_plan(sde, ts, integrator, noise_scale, lam, eps_frame)
  n_eval = sum(st.kind == 'eval' for st in stages)
  nfe = n_eval * int(num_steps) + int(init_eval)
  T = float(sde.T)

  def init(ctx, z):
    s = ctx.score(z, T) if init_eval else jnp.zeros_like(z)
    return (z, s)

  def step(ctx, carry, c, kk):
    z, s = carry
    for st in stages:
      if st.kind == 'eval':
        s = ctx.score(z, c[st.t])
        continue
      out = ab(c[st.U], z)
      if st.V:
        out = out + ab(c[st.V], ctx.precond_blocks('drift', s) if st.precond else s)
      if st.W:
        xi = ctx.noise(st.tag)
        out = out + ab(c[st.W], ctx.precond_blocks('noise', xi) if st.precond else xi)
      z = out
    return (z, s)

  sampler = common.make_sampler(sde, shape, num_steps=int(num_steps), nfe=nfe, xs=xs,
                                init=init, step=step, noise_source=noise_source,
                                preconditioner=preconditioner)
  sampler.grid = ts
  sampler.noise_tags = sorted({st.tag for st in stages if st.W})
  return sampler

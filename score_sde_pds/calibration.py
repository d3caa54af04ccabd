"""Calibrated PDS: the sampler picks its own filter on a Gaussian proxy of the data.

The proxy
---------
A stationary Gaussian field x (per channel c, channels independent) with mean mu_c and
covariance F^-1 diag(s) F (F the unnormalised 2-D DFT, y = F[x] / sqrt(HW) its unitary
version, so E|y(k) - E y(k)|^2 = s(k) and E y = sqrt(HW) mu_c at DC, 0 elsewhere).
Under the forward SDE x_t = a(t) x + std(t) z, so its score is exact at every t and
Fourier-diagonal (models/analytic.py):

  score_t(y)(k) = -(y(k) - a(t) mu_y(k)) / lam_t(k),   lam_t = a(t)^2 s(k) + std(t)^2.   (P1)

From the frequency statistic R = log(1 + E|F x01|^2) of the data x01 in [0, 1]
(preconditioning.compute_statistics, paper Eq. 14) the proxy is
  s01(k) = (e^R(k) - 1) / (HW)                                   for k != 0,
  e^R(0) - 1 = HW s01(0) + (HW mu01)^2                           at DC,
so at DC the statistic holds variance and mean together and R alone cannot split them.
`GaussianProxy.from_statistics` extrapolates the DC variance geometrically along the axes,
s01(0) = s1^2 / s2 (s_q the mean of s01 at (+-q, 0), (0, +-q)), at least the largest of
the 8 neighbours of DC and at most the whole DC power, and gives the rest to the mean,
mu01 = sqrt(e^R(0) - 1 - HW s01(0)) / HW (or takes a known mean). Measured: s01(0) is
1.4x the truth on the analytic oracle and 1.7x on the 200 synthetic CIFAR-size images
of tests/fixtures/pds (the largest neighbour alone: 0.35x and 0.7x). The split moves
the proxy's FD (the DC mode has the largest variance) but hardly the calibrated alpha
(within 5 % of the exact-mean proxy's, whose FD on the oracle is within 1 % of the best
of a fine alpha sweep; tests/test_calibration.py). Models see x = x01 (VE,
data.centered False) or x = 2 x01 - 1 (VP models, data.centered True): s = 4 s01,
mu = 2 mu01 - 1.
The space statistic A = E[x01^2] adds nothing for a stationary proxy (Parseval).

The recursion
-------------
With a Fourier-diagonal preconditioner (M = R D, R = F^-1 diag(r) F, D = d_c per
channel; drift multiplier c(k) = m2(k) + i omega phi(k), m2 = r^2 d^2, noise multiplier
sqrt(m2)), every step of every PC sampler in sampling.py is affine per mode,
  y <- A y + B + sqrt(nu) xi,   xi unit complex (real at DC / Nyquist) noise,
so the per-mode mean e and variance v of y obey the closed-form recursion
  e <- A e + B,   v <- |A|^2 v + nu                                                  (R0)
(the mean lives at DC, where c is real). Per step k (t = linspace(T, eps, N)[k],
i = N - 1 - k; lam = lam_t(k), tgt = a(t) mu_y):
  prior (sampling.get_pc_sampler): v = prior_std^2 m2 (reference mode; vanilla m2 = 1),
    v = prior_std^2 (marginal mode), e = 0.
  reverse_diffusion (sde.discretize: f = phi y, noise G; w = 1, or 1/2 with no noise for
    the probability flow; Song et al. Eq. 6 / 13, PDS Alg. 1 for the reference mode):
      reference  A = 1 - c (phi + w G^2 / lam),  B = c w G^2 tgt / lam,  nu = G^2 m2;
      marginal   A = 1 - phi - G^2 (1 + eta c) / (2 lam),  B = G^2 (1 + eta c) tgt / (2 lam),
                 nu = eta G^2 m2   (REFERENCE.md Sec. 3: f - g^2 s / 2 - eta g^2 MM^T s / 2);
  euler_maruyama: the same with phi = f(t) / N, G^2 = g(t)^2 / N (sde.sde, dt = -1/N);
  ancestral_sampling (not preconditioned; Song et al. App. F):
      VE  A = 1 - d2 / lam, B = d2 tgt / lam, nu = sigma_{i-1}^2 d2 / sigma_i^2,
          d2 = sigma_i^2 - sigma_{i-1}^2;
      VP  A = (1 - beta_i / lam) / sqrt(1 - beta_i), B = beta_i tgt / (lam sqrt(1 - beta_i)),
          nu = beta_i;
  langevin corrector (Song et al. Alg. 4, PDS Alg. 1), n_steps times before the predictor:
      A = 1 - eps c / lam, B = eps c tgt / lam, nu = 2 eps m2,
      eps = 2 alpha_i (snr E|n| / E|g|)^2,  n = M z, g = (MM^T + omega S) score,      (L1)
      with the EXPECTED per-sample norms (the batch mean of the norms converges to them):
      E|n|^2 = sum_k m2,  E|g|^2 = sum_k |c|^2 (v + (e - tgt)^2) / lam^2,  and
      E|x| = sqrt(E|x|^2) (1 - Var|x|^2 / (8 (E|x|^2)^2)) (second-order delta method;
      Var|g|^2 = 2 sum_k q^2 + 4 sum_DC q (E g)^2, q = |c|^2 v / lam^2 the eigenvalues of
      Cov g; Var|n|^2 = 2 sum_k m2^2);  alpha_i = 1 (VE) or 1 - beta_i (VP, subVP);
  ald corrector: the same update with eps = 2 alpha_i (snr std(t))^2 (exact: no norm).
The output is x_mean of the last step with `denoise` (v without the last nu), x otherwise.
Sums over k run over all H W C modes. The recursion is exact for the Gaussian proxy
except the Langevin step (L1), which uses expected norms (exact in the large-batch limit
of corrector_norm='batch'; 'sample' norms are approximated the same way), and a
non-constant space gain d, which enters through a circulant projection of D^2
(`exact_moments` of a given Preconditioner: mean_pixels(d^2), the Fourier diagonal of
M M^T = R D^2 R; the calibration: the data-weighted mean, 'Space gain' below).
Frechet distance of the output N(e, diag v) to the proxy N(mu_y, diag s) (both
circulant, so they commute):
  FD = sum_c (e_c(0) - sqrt(HW) mu_c)^2 + sum_{k,c} (sqrt v - sqrt s)^2.            (F1)

Calibration
-----------
`auto_alpha` minimises (F1) over alpha in (1, inf] for the statistics filter
gain = alpha / (R / max R + alpha - 1) (preconditioning.statistics_to_gain), alpha = inf
being the identity (vanilla), which is a candidate: the choice is never worse than vanilla
on the proxy. A log-spaced grid of alpha - 1 in [1e-2, 1e4] is evaluated at once
(vectorised over candidates) and refined three times around its best point.
`calibrate_gain` optimises a free per-frequency gain r(k) (a function of the statistic,
so even in k): without the langevin corrector the modes decouple (every A, B, nu above
depends on its own mode only) and each group of modes gets its own 1-D minimisation (grid
+ refinement, vectorised over modes); with it the step size (L1) couples them, and
log r is a piecewise-linear function of R / max R with `knots` knots, optimised by
L-BFGS-B from the auto-alpha filter (gradients by central differences, all evaluated in
one vectorised recursion), so it is never worse than the alpha filter on the proxy.

Stability. A free per-mode gain can make a mode's variance explode (|A| > 1 for many
steps) and then cancel it at one step where A ~ 0: exact in the recursion, but in the
float32 sampler the FFTs leak ~1e-7 of the exploded energy into every other mode (seen:
euler_maruyama, N = 100, a calibrated gain with peak v_k / v_0 = 4e14 predicted FD 7e-5
and sampled FD 6e5), and such filters hang on the exact spectrum. Every candidate filter
(M != I) whose per-mode variance exceeds MAX_GROWTH = 10 times its prior value at any
step is rejected (FD = inf); the vanilla/identity candidate is always admissible.

Space gain. A pixel-diagonal D^2 is not Fourier-diagonal; the calibration replaces it
per channel by its Rayleigh quotient under the data, E[x^T D^2 x] / E[x^T x] =
sum_p A_p d_p^2 / sum_p A_p (A the space statistic, the per-pixel second moment), i.e. the
gain the data's own modes see, rather than by the plain pixel mean of d^2 (the Rayleigh
quotient under white noise). The two differ where the data has no energy: on MNIST's
empty border d is at its maximum alpha / (alpha - 1) and the plain mean is 3.0 at
alpha = 2 against 1.65 data-weighted. There, in the directions of largest M M^T
(high frequencies on the border), a linear score -x / sigma^2 makes small alphas blow
up (the float32 sampler with that exact score on zero data: rms 1e17 at alpha = 2,
N = 20), while the trained NCSN++ does not (max |x| 1.9; its score is linear near the
data, v^T J v = -0.98 / sigma^2 along that direction, but not far from it). The plain
mean made the proxy choose alpha 5.3 / 8.6 / 15.4 at N = 20 / 30 / 50 on the bundled
model against the network's best 3 / 3 / 2-3 (README, 'Calibrated PDS'); the
data-weighted one chooses 3.35 / 5.49 / 9.9. On stationary data (A constant per
channel) the two are equal. It does not make the proxy network-aware in general: with
annealed Langevin dynamics on the MNIST NCSNv2 (README) the proxy still picks too small
an alpha (1.43 at N = 50, worse than vanilla there; 1.73 with the plain mean), which is
what the pilot check below is for.

Mode groups. Modes with the same statistic (and channel when a space gain is used, and
|phi| with omega != 0) behave identically, so the recursion runs once per distinct value
(weighted by its count): exact. Past `max_groups` distinct values (large images: FFHQ
1024^2 has ~3e6 modes) the statistic is binned into `max_groups` equal-width bins and
each bin represented by its mean statistic (|phi| by its RMS). Measured (power-law
fields, reverse_diffusion + langevin): 64^2 x 3 (1371 groups -> 184 bins) and 256^2 x 3
(17772 groups -> 1209 bins) give the same alpha (to 0.1 %) and FD (to 1e-5 relative);
512 bins move alpha by 0.2 %. A 1024^2 x 3 (FFHQ-size) auto_alpha with frequency and
space statistics takes ~1 s of CPU.

Pilot check. The proxy's score is exact; a trained network's is not, and strong
high-frequency gains amplify what it gets wrong (measured: the MNIST NCSNv2 with annealed
Langevin dynamics, where the proxy picks alpha 1.43 at N = 50 and that is worse than
vanilla). `alpha='auto'` in a sampling run therefore checks the proxy's choice on the
network (score_sde_pds/pilot.py): a few pilot samples for each of `pilot_candidates`
(the choice a, a / 2, and 2a, 4a, ... up to >= 20, then inf), scored by `spectral_fd`,
the Frechet distance between their power spectrum and the data's (F1 with the measured
uncentred powers, needing nothing but R). `pilot_choice` keeps the proxy's alpha unless
the best-scoring candidate beats it in a paired bootstrap over the pilot samples
(Bonferroni over the comparisons), and then moves to the nearest candidate that the pilot
cannot tell from the best.
These three functions are numpy on given samples; the sampling is pilot.py's.

Everything is numpy float64, no network; the SDE schedules come from sde_lib evaluated
with jax in float64 (`jax.enable_x64`). Written here because no library knows these
sampler-specific moment recursions; scipy.optimize (L-BFGS-B) does the multi-parameter
minimisation. The 1-D searches are vectorised grids with refinement rather than a scalar
optimiser: the FD has divergence cliffs (alpha -> 1) and several local minima, and one
vectorised recursion evaluates a whole grid at the cost of one candidate.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np

from score_sde_pds import preconditioning, sampling, sde_lib

__all__ = [
    'GaussianProxy',
    'Schedule',
    'exact_moments',
    'supports',
    'load_gain',
    'predicted_fd',
    'config_kwargs',
    'SamplerSpec',
    'auto_alpha',
    'alpha_sweep',
    'calibrate_gain',
    'pilot_candidates',
    'spectral_fd',
    'pilot_choice',
    'PilotScorer',
    'pilot_decide',
    'parse_alpha',
    'save_gain',
    'alpha_label',
    'json_number',
]

PREDICTORS = ('none', 'reverse_diffusion', 'euler_maruyama', 'ancestral_sampling')
CORRECTORS = ('none', 'langevin', 'ald')
ALPHA_STRINGS = ('auto', 'inf')
GAIN_CONTENT = 'pds_calibrated_gain'   # 'content' metadata of a calibrated gain file

# largest transient growth v_k / v_0 of a per-mode variance a calibrated filter may have
# (module docstring, 'Stability')
MAX_GROWTH = 10.
# log(alpha - 1) grid of auto_alpha
_LOG_AM1 = np.linspace(np.log(1e-2), np.log(1e4), 49)


# ----------------------------------------------------------------------------- alpha values


def parse_alpha(value, key='config.sampling.pds.alpha'):
  """A number > 1, math.inf, 'inf' or 'auto' -> float (inf for vanilla) or 'auto'.

  Raises ValueError naming `key` otherwise (e.g. 'autoo', 1.0, nan).
  """
  if isinstance(value, str):
    v = value.strip().lower()
    if v == ALPHA_STRINGS[0]:
      return 'auto'
    if v in (ALPHA_STRINGS[1], '+inf', 'infinity'):
      return math.inf
    try:
      value = float(v)
    except ValueError:
      raise ValueError(f"{key}={value!r} is not valid: expected a number > 1, 'auto' "
                       "(calibrated on the data statistics) or 'inf' (identity, vanilla)"
                       ) from None
  if isinstance(value, bool):
    raise ValueError(f"{key}={value!r} is not valid: expected a number > 1, 'auto' or 'inf'")
  try:
    a = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{key}={value!r} is not valid: expected a number > 1, 'auto' or "
                     "'inf'") from None
  if math.isnan(a) or not a > 1:
    raise ValueError(f"{key} must be > 1 (gain = alpha / (S/max S + alpha - 1)), 'auto' or "
                     f"'inf', got {value!r}")
  return a


def alpha_label(alpha):
  """meta.json form of an alpha: a number, or the string 'inf' (vanilla)."""
  return 'inf' if math.isinf(alpha) else float(alpha)


def json_number(x):
  """A float for JSON: non-finite values (a diverging sampler's FD) as strings."""
  x = float(x)
  return x if math.isfinite(x) else str(x)


# ----------------------------------------------------------------------------- the proxy


@dataclasses.dataclass(frozen=True)
class GaussianProxy:
  """A stationary Gaussian field in model space (see the module docstring).

  Attributes:
    spectrum: s (H, W, C) float64, per-mode variances of y = F[x] / sqrt(HW).
    mean: mu (C,) float64 per-channel pixel mean.
    stat: the data-space statistic R (H, W, C) the filters are built from (even part),
      or None.
  """
  spectrum: np.ndarray
  mean: np.ndarray
  stat: Optional[np.ndarray] = None

  @property
  def shape(self):
    return self.spectrum.shape

  @classmethod
  def from_statistics(cls, freq_stats, centered=False, mean=None, name='freq_stats'):
    """The proxy of R = log(1 + E|F x01|^2) (H, W, C), data x01 in [0, 1].

    Args:
      freq_stats: (H, W, C) statistic (as `preconditioning.load_statistics` returns).
      centered: models see 2 x01 - 1 (config.data.centered, VP models).
      mean: optional known data-space mean per channel (C,); default: split the DC power
        (module docstring).
      name: label of freq_stats in error messages.
    """
    R = np.asarray(freq_stats, np.float64)
    if R.ndim != 3:
      raise ValueError(f'{name}: frequency statistics must be (H, W, C), got shape {R.shape}')
    if not np.all(np.isfinite(R)):
      raise ValueError(f'{name}: frequency statistics contain non-finite values')
    if np.any(R < 0):
      raise ValueError(f'{name}: frequency statistics R = log(1 + E|F x|^2) must be >= 0, '
                       f'found min {R.min()}')
    H, W, C = R.shape
    R = np.asarray(preconditioning.even_part(R), np.float64)
    hw = H * W
    s01 = np.expm1(R) / hw
    p0 = np.expm1(R[0, 0])                   # (C,) DC power HW s01(0) + (HW mu01)^2
    if mean is None:
      ax = lambda q: np.mean(s01[np.array([q, -q, 0, 0]) % H, np.array([0, 0, q, -q]) % W],
                             axis=0)
      hh = np.array([-1, -1, -1, 0, 0, 1, 1, 1]) % H
      ww = np.array([-1, 0, 1, -1, 1, -1, 0, 1]) % W
      s_nb = np.max(s01[hh, ww], axis=0)     # (C,) largest neighbour of DC
      s0 = s_nb
      if min(H, W) >= 4:                     # geometric extrapolation along the axes
        s0 = np.maximum(s_nb, ax(1) ** 2 / np.maximum(ax(2), 1e-300))
      s0 = np.minimum(s0, p0 / hw)
      mu01 = np.sqrt(np.maximum(p0 - hw * s0, 0.)) / hw
    else:
      mu01 = np.broadcast_to(np.asarray(mean, np.float64), (C,)).copy()
      s0 = np.maximum(p0 - (hw * mu01) ** 2, 0.) / hw
    s01[0, 0] = s0
    if centered:
      return cls(spectrum=4. * s01, mean=2. * mu01 - 1., stat=R)
    return cls(spectrum=s01, mean=mu01, stat=R)

  @classmethod
  def from_field(cls, field, stat=None):
    """The analytic oracle itself (models/analytic.GaussianField): exact."""
    return cls(spectrum=np.asarray(field.spectrum, np.float64),
               mean=np.broadcast_to(np.asarray(field.mean, np.float64),
                                    (field.spectrum.shape[-1],)).copy(), stat=stat)


@dataclasses.dataclass(frozen=True)
class _Modes:
  """Flat mode groups: s, target mean of y (DC only), weight (count), statistic,
  channel, |phi|, and `index` (H, W, C) -> group."""
  s: np.ndarray
  mu_y: np.ndarray
  weight: np.ndarray
  stat: np.ndarray
  channel: np.ndarray
  phi: np.ndarray
  index: np.ndarray
  dc: np.ndarray
  exact: bool


def _modes(proxy, phi=None, by_channel=False, max_groups=None):
  """Groups the proxy's Fourier modes (module docstring, 'Mode groups')."""
  H, W, C = proxy.shape
  s = np.asarray(proxy.spectrum, np.float64)
  stat = proxy.stat if proxy.stat is not None else s
  stat = np.asarray(stat, np.float64)
  ch = np.broadcast_to(np.arange(C), (H, W, C))
  ph = np.zeros((H, W, C)) if phi is None else np.abs(np.broadcast_to(phi, (H, W, C)))
  dc = np.zeros((H, W, C), bool)
  dc[0, 0, :] = True
  mu_y = np.where(dc, np.sqrt(H * W) * np.broadcast_to(proxy.mean, (H, W, C)), 0.)
  flat = lambda a: np.asarray(a).reshape(-1)
  if max_groups is None:   # one entry per mode
    n = H * W * C
    return _Modes(s=flat(s), mu_y=flat(mu_y), weight=np.ones(n), stat=flat(stat),
                  channel=flat(ch), phi=flat(ph), index=np.arange(n).reshape(H, W, C),
                  dc=flat(dc), exact=True)
  # DC modes stay single (they carry the mean); the others group by their key
  # (statistic[, channel][, |phi|]), encoded as one int64 per mode.
  fdc, fch = flat(dc), flat(ch)
  per_ch = C if by_channel else 1
  chcode = fch if by_channel else 0
  svals, scode = np.unique(flat(stat), return_inverse=True)
  exact = len(svals) * per_ch <= max_groups
  if exact:
    code = scode.reshape(-1) * per_ch + chcode
    if phi is not None:
      pvals, pcode = np.unique(flat(ph), return_inverse=True)
      code = code * len(pvals) + pcode.reshape(-1)
    uniq, inv = np.unique(np.where(fdc, -1 - fch, code), return_inverse=True)
    inv = inv.reshape(-1)
    exact = len(uniq) <= max_groups
  if not exact:            # equal-width bins of the statistic (per channel if by_channel)
    lo, hi = stat[~dc].min(), stat[~dc].max()
    nb = max(1, (int(max_groups) - C) // per_ch)
    b = np.minimum(((flat(stat) - lo) / max(hi - lo, 1e-300) * nb).astype(np.int64), nb - 1)
    code = np.where(fdc, fch, C + b * per_ch + chcode)      # DC codes first
    present = np.bincount(code, minlength=C + nb * per_ch) > 0
    inv = (np.cumsum(present) - 1)[code]
    uniq = np.flatnonzero(present)
  G = len(uniq)
  weight = np.bincount(inv, minlength=G).astype(np.float64)
  avg = lambda a: np.bincount(inv, weights=flat(a), minlength=G) / weight
  g_stat = avg(stat)
  g_phi = np.sqrt(avg(ph ** 2))
  g_ch = np.round(avg(ch)).astype(np.int64)
  g_dc = avg(dc) > 0.5
  g_mu = avg(mu_y)
  if exact:
    g_s = avg(s)
  elif proxy.stat is not None:  # the representative statistic's variance (scaled as s)
    scale = s[~dc].sum() / np.expm1(stat[~dc]).sum()
    g_s = np.where(g_dc, avg(s), np.expm1(g_stat) * scale)
  else:
    g_s = avg(s)
  return _Modes(s=g_s, mu_y=g_mu, weight=weight, stat=g_stat, channel=g_ch, phi=g_phi,
                index=inv.reshape(H, W, C), dc=g_dc, exact=exact)


# ----------------------------------------------------------------------------- schedules


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Per-step coefficients of one sampler on one SDE (float64, (N,) each).

  a, std: marginal mean coefficient and std at t_k; phi, G2: linear drift coefficient and
  noise variance of the predictor's SDE step (discretize for reverse_diffusion, sde / N
  for euler_maruyama); anc_*: ancestral-sampling coefficients; lalpha: alpha_i of the
  snr rule; prior_std.
  """
  N: int
  a: np.ndarray
  std: np.ndarray
  phi: np.ndarray
  G2: np.ndarray
  anc_A0: np.ndarray
  anc_k: np.ndarray
  anc_nu: np.ndarray
  lalpha: np.ndarray
  prior_std: float
  vp_like: bool

  @classmethod
  def create(cls, sde, eps, predictor='reverse_diffusion'):
    """The schedule of `predictor` on `sde` (its N) with smallest time `eps`.

    Evaluated by sde_lib's own methods in float64 inside one jitted function (compiled
    once per SDE class, N and predictor).
    """
    import jax
    if not 0 < eps < sde.T:
      raise ValueError(f'sampling eps must lie in (0, T={sde.T}), got {eps!r}')
    with jax.enable_x64(True):
      sde64 = jax.tree.map(lambda v: np.float64(np.asarray(v)), sde)   # float64 leaves
      out = _schedule_arrays(sde64, np.float64(eps), predictor == 'euler_maruyama')
      out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    return cls(N=int(sde.N), prior_std=float(sampling._prior_std(sde)),
               vp_like=sampling._vp_like(sde), **out)


def _schedule_arrays_impl(sde, eps, em):
  import jax.numpy as jnp
  N = int(sde.N)
  t = jnp.linspace(sde.T, eps, N)
  i = N - 1 - jnp.arange(N)
  ones = jnp.ones((N,), t.dtype)
  a, std = sde.marginal_prob(ones, t)
  if em:
    f, g = sde.sde(ones, t)
    phi, G2 = f / N, g ** 2 / N
  else:
    f, G = sde.discretize(ones, t, i)
    phi, G2 = f, G ** 2
  vp = sampling._vp_like(sde)
  if isinstance(sde, sde_lib.VESDE):
    sig = sde.discrete_sigmas
    sigma = sig[i]
    adj = jnp.where(i == 0, 0., sig[jnp.maximum(i - 1, 0)])
    d2 = sigma ** 2 - adj ** 2
    anc = (jnp.ones_like(d2), d2, adj ** 2 * d2 / sigma ** 2)
  elif vp:
    beta = sde.discrete_betas[i]
    anc = (1. / jnp.sqrt(1. - beta), beta, beta)
  else:
    anc = (jnp.full((N,), jnp.nan),) * 3
  lalpha = sde.alphas[i] if vp else jnp.ones((N,))
  b = lambda x: jnp.broadcast_to(jnp.asarray(x, t.dtype), (N,))
  return {'a': b(a), 'std': b(std), 'phi': b(phi), 'G2': b(G2), 'anc_A0': b(anc[0]),
          'anc_k': b(anc[1]), 'anc_nu': b(anc[2]), 'lalpha': b(lalpha)}


def _schedule_arrays(sde, eps, em):
  import jax
  global _SCHEDULE_JIT
  if _SCHEDULE_JIT is None:
    _SCHEDULE_JIT = jax.jit(_schedule_arrays_impl, static_argnums=2)
  return _SCHEDULE_JIT(sde, eps, em)


_SCHEDULE_JIT = None


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """The sampler options the recursion needs (sampling.get_pc_sampler's names)."""
  predictor: str = 'reverse_diffusion'
  corrector: str = 'none'
  snr: float = 0.16
  n_steps: int = 1
  denoise: bool = True
  pds_mode: str = 'reference'
  eta: float = 1.0
  probability_flow: bool = False

  def __post_init__(self):
    if self.predictor not in PREDICTORS:
      raise ValueError(f'config.sampling.predictor={self.predictor!r}: the calibration '
                       f'supports {list(PREDICTORS)}')
    if self.corrector not in CORRECTORS:
      raise ValueError(f'config.sampling.corrector={self.corrector!r}: the calibration '
                       f'supports {list(CORRECTORS)}')
    if self.pds_mode not in preconditioning.VALID_MODES:
      raise ValueError(f'config.sampling.pds.mode={self.pds_mode!r}; valid: '
                       f'{list(preconditioning.VALID_MODES)}')
    if not (math.isfinite(self.snr) and self.snr > 0):
      raise ValueError(f'config.sampling.snr must be > 0, got {self.snr!r}')
    if int(self.n_steps) < 1:
      raise ValueError(f'config.sampling.n_steps_each must be >= 1, got {self.n_steps!r}')

  @classmethod
  def from_config(cls, config):
    s = config.sampling
    return cls(predictor=str(s.predictor).lower(), corrector=str(s.corrector).lower(),
               snr=float(s.snr), n_steps=int(s.n_steps_each), denoise=bool(s.noise_removal),
               pds_mode=str(s.pds.get('mode', 'reference')), eta=float(s.pds.get('eta', 1.)),
               probability_flow=bool(s.probability_flow))


# ----------------------------------------------------------------------------- recursion


def _expected_norm(m2, var2):
  """E|x| from E|x|^2 = m2 and Var|x|^2 = var2 (second-order delta method)."""
  return np.sqrt(m2) * (1. - var2 / (8. * m2 ** 2))


def _recursion(modes, sched, spec, m2, c, preconditioned, track_peak=False):
  """Runs (R0) for K candidate filters at once.

  Args:
    modes: _Modes (M groups).
    sched: Schedule.
    spec: SamplerSpec.
    m2: (K, M) noise multipliers r^2 d^2.
    c: (K, M) drift multipliers (complex with the solenoidal term).
    preconditioned: False for the vanilla sampler (precond None): no marginal split.
    track_peak: also return peak (K, M), the largest v_k / v_0 over the steps (the
      transient growth of each mode's variance above its prior value).
  Returns:
    (v (K, M) variances, e (K, M) means of y (zero off DC)) of the sampler output
    [, peak (K, M)].
  """
  s, w = modes.s, modes.weight
  dc = np.flatnonzero(modes.dc)                  # the mean lives on these columns only
  K, M = m2.shape
  marginal = preconditioned and spec.pds_mode == 'marginal'
  pf = spec.probability_flow
  cplx = np.iscomplexobj(c)
  c2 = np.abs(c) ** 2 if cplx else c * c
  cr = c.real if cplx else c
  crd, c2d, m2d = cr[:, dc], c2[:, dc], m2[:, dc]
  mud = modes.mu_y[dc]
  lam_all = sched.a[:, None] ** 2 * s[None] + sched.std[:, None] ** 2      # (N, M)
  inv_all = 1. / lam_all
  v = sched.prior_std ** 2 * (np.ones_like(m2) if marginal else m2)
  v0, peak = v, np.ones((K, M))
  e = np.zeros((K, len(dc)))                     # mean of y on the DC columns
  n_corr = spec.n_steps if spec.corrector != 'none' else 0
  if spec.corrector == 'langevin':
    n_norm = _expected_norm(m2 @ w, 2. * (m2 * m2) @ w)[:, None]
    wc2 = w * c2
  p = spec.predictor
  v_mean = v
  with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
    for k in range(sched.N):
      inv = inv_all[k]
      invd = inv[dc]
      tgt = sched.a[k] * mud
      for _ in range(n_corr):
        if spec.corrector == 'langevin':   # (L1), expected norms
          q = wc2 * v * (inv * inv)
          dev2 = c2d * (e - tgt) ** 2 * invd ** 2
          qd = q[:, dc] / w[dc]
          g2 = q.sum(-1) + dev2 @ w[dc]
          gvar = 2. * np.sum(q * q / w, -1) + 4. * np.sum(w[dc] * qd * dev2, -1)
          step = 2. * sched.lalpha[k] * (spec.snr * n_norm[:, 0] / _expected_norm(
              g2, gvar)) ** 2
          step = step[:, None]
        else:  # ald
          step = 2. * sched.lalpha[k] * (spec.snr * sched.std[k]) ** 2
        A = 1. - step * c * inv
        e = (1. - step * crd * invd) * e + step * crd * tgt * invd
        v = (np.abs(A) ** 2 if cplx else A * A) * v + 2. * step * m2
      if p == 'none':
        v_mean, nu = v, 0.
      elif p == 'ancestral_sampling':
        A0, kk = sched.anc_A0[k], sched.anc_k[k]
        A = A0 * (1. - kk * inv)
        e = A0 * (1. - kk * invd) * e + A0 * kk * tgt * invd
        v_mean, nu = A * A * v, sched.anc_nu[k]
      else:
        phi, G2 = sched.phi[k], sched.G2[k]
        if marginal and not pf:           # f - G^2 s / 2 - eta G^2 MM^T s / 2
          h = 0.5 * G2 * inv
          A = 1. - phi - h * (1. + spec.eta * c)
          Bd = 0.5 * G2 * invd * (1. + spec.eta * crd)
          e = (1. - phi - Bd) * e + Bd * tgt
          nu = spec.eta * G2 * m2
        else:                             # reference: the whole drift through MM^T
          wt = 0.5 if pf else 1.
          A = 1. - c * (phi + wt * G2 * inv)
          e = (1. - crd * (phi + wt * G2 * invd)) * e + crd * wt * G2 * tgt * invd
          nu = 0. if pf else G2 * m2
        v_mean = (np.abs(A) ** 2 if cplx else A * A) * v
      v = v_mean + nu
      if track_peak:
        peak = np.fmax(peak, v / v0)
  out = v_mean if spec.denoise else v
  e_full = np.zeros((K, M))
  e_full[:, dc] = e
  if track_peak:
    return out, e_full, np.where(np.isnan(peak), np.inf, peak)
  return out, e_full


def _fd(modes, v, e):
  """(F1) per candidate, (K,); inf where the output is not finite."""
  with np.errstate(over='ignore', invalid='ignore'):
    fd = np.sum(modes.weight * (np.sqrt(v) - np.sqrt(modes.s)) ** 2, -1) + np.sum(
        np.where(modes.dc, (e - modes.mu_y) ** 2, 0.), -1)
  return np.where(np.isfinite(fd), fd, np.inf)


# ----------------------------------------------------------------------------- exact moments


def supports(sde, predictor, corrector, method='pc'):
  """True when the recursion covers this sampler: the PC sampler on VE / VP / subVP with
  a registered predictor and corrector."""
  return (str(method).lower() == 'pc'
          and isinstance(sde, (sde_lib.VESDE, sde_lib.VPSDE, sde_lib.subVPSDE))
          and str(predictor).lower() in PREDICTORS and str(corrector).lower() in CORRECTORS)


def _multipliers(precond, shape):
  """(m2, c, phi) (H, W, C) of a Preconditioner (None: vanilla)."""
  H, W, C = shape
  m2 = np.ones(shape)
  phi = np.zeros(shape)
  omega = 0.
  if precond is not None:
    if precond.use_freq:
      m2 = m2 * np.broadcast_to(np.asarray(precond.freq_gain, np.float64), shape) ** 2
    if precond.use_space:
      d = np.broadcast_to(np.asarray(precond.space_gain, np.float64), shape)
      m2 = m2 * np.mean(d ** 2, axis=(0, 1), keepdims=True)  # circulant projection
    if precond.use_skew:
      omega = float(precond.omega)
      phi = np.broadcast_to(np.asarray(precond.skew_phase, np.float64), shape)
  c = m2 + 1j * omega * phi if omega else m2
  return m2, c


def exact_moments(proxy, sde, eps, precond, predictor, corrector, *, snr=0.16, n_steps=1,
                  denoise=True, pds_mode='reference', eta=1.0, probability_flow=False):
  """Output law of the PC sampler on a Gaussian field (analytic oracle or proxy).

  Args:
    proxy: GaussianProxy, or an analytic.GaussianField (the oracle, exact).
    sde, eps: the SDE (its N) and the sampler's smallest time.
    precond: Preconditioner or None (vanilla). A non-constant space gain enters through
      its circulant projection (exact when d is constant per channel).
    predictor, corrector, snr, n_steps, denoise, pds_mode, eta, probability_flow:
      sampling.get_pc_sampler's options.
  Returns:
    dict: 'spectrum' v (H, W, C) per-mode output variances (the target's is
    proxy.spectrum), 'mean_error' (C,) pixel-mean error, 'fd' (F1) and 'spec_err'
    mean |log(v / s)|; 'peak_growth' the largest v_k / v_0 over steps and modes (the
    calibration rejects filters above MAX_GROWTH); 'exact' False where an approximation
    entered (Langevin norms, non-constant d).
  """
  if not isinstance(sde, (sde_lib.VESDE, sde_lib.VPSDE, sde_lib.subVPSDE)):
    raise ValueError(f'the Gaussian-proxy recursion covers VE, VP and subVP SDEs, not '
                     f'{type(sde).__name__}')
  if not isinstance(proxy, GaussianProxy):
    proxy = GaussianProxy.from_field(proxy)
  spec = SamplerSpec(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                     denoise=denoise, pds_mode=pds_mode, eta=eta,
                     probability_flow=probability_flow)
  shape = proxy.shape
  H, W, C = shape
  m2, c = _multipliers(precond, shape)
  modes = _modes(proxy)
  sched = Schedule.create(sde, eps, predictor)
  v, e, peak = _recursion(modes, sched, spec, m2.reshape(1, -1), np.reshape(c, (1, -1)),
                          preconditioned=precond is not None, track_peak=True)
  fd = float(_fd(modes, v, e)[0])
  v = v.reshape(shape)
  mean_err = (e.reshape(shape)[0, 0] - modes.mu_y.reshape(shape)[0, 0]) / np.sqrt(H * W)
  with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
    spec_err = float(np.mean(np.abs(np.log(v / proxy.spectrum))))
  d_const = (precond is None or not precond.use_space or np.ptp(np.broadcast_to(
      np.asarray(precond.space_gain), shape), axis=(0, 1)).max() == 0)
  return {'spectrum': v, 'mean_error': mean_err, 'fd': fd, 'spec_err': spec_err,
          'peak_growth': float(np.max(peak)), 'exact': bool(d_const and corrector != 'langevin')}


# ----------------------------------------------------------------------------- calibration


@dataclasses.dataclass
class _Problem:
  """One calibration problem: grouped proxy modes, schedule, sampler, space gain factor."""
  proxy: GaussianProxy
  modes: _Modes
  sched: Schedule
  spec: SamplerSpec
  s_hat: np.ndarray              # (M,) R / max R of each group
  omega: float
  space_stat: Optional[np.ndarray]

  def d2(self, alphas):
    """(K, M) data-weighted circulant projection of the space gain per candidate:
    sum_p A_p d_p^2 / sum_p A_p per channel (module docstring, 'Space gain').

    Evaluated on the distinct values of A / max A per channel with their counts (exact),
    or on 4096 equal-width bins of them (bin means, counts) for images with more distinct
    values (relative error < 1e-6); a channel with A = 0 everywhere gets the unweighted
    mean.
    """
    K = len(alphas)
    if self.space_stat is None:
      return np.ones((K, 1))
    weights = [cnt * vals if np.any(vals > 0) else cnt for vals, cnt in self._space_values]
    out = np.empty((K, len(self._space_values)))
    for j, al in enumerate(alphas):
      for c, ((vals, _), w) in enumerate(zip(self._space_values, weights)):
        d = np.ones_like(vals) if math.isinf(al) else al / (vals + al - 1.)
        out[j, c] = np.sum(w * d * d) / np.sum(w)
    return out[:, self.modes.channel]

  @property
  def _space_values(self):
    if getattr(self, '_space_cache', None) is None:
      a_hat = self.space_stat / self.space_stat.max()
      vals = []
      for c in range(a_hat.shape[-1]):
        v, cnt = np.unique(a_hat[..., c], return_counts=True)
        if len(v) > 4096:
          b = np.minimum(((a_hat[..., c].reshape(-1) - v[0]) / max(v[-1] - v[0], 1e-300)
                          * 4096).astype(np.int64), 4095)
          cnt = np.bincount(b, minlength=4096).astype(np.float64)
          v = np.bincount(b, weights=a_hat[..., c].reshape(-1), minlength=4096) / np.maximum(
              cnt, 1)
        vals.append((v, cnt))
      self._space_cache = vals
    return self._space_cache

  def run(self, m2, preconditioned=True):
    """(v, e) (K, M) of the sampler with noise multipliers m2 (K, M); v = inf for a
    filter whose per-mode variance grows past MAX_GROWTH times its prior value on the
    way (module docstring, 'Stability'); unit filters (M = I) are exempt."""
    v, e, peak = self.run_peak(m2, preconditioned)
    bad = (peak.max(-1) > MAX_GROWTH) & ~np.all(m2 == 1., axis=-1)
    return np.where(bad[:, None], np.inf, v), e

  def run_peak(self, m2, preconditioned=True):
    """(v, e, peak) (K, M) without the stability constraint (peak: _recursion)."""
    c = m2 + 1j * self.omega * self.modes.phi if self.omega else m2
    return _recursion(self.modes, self.sched, self.spec, m2, c, preconditioned,
                      track_peak=True)

  def fd_penalised(self, m2):
    """(K,) FD times max(1, peak / MAX_GROWTH)^2: a smooth stand-in for the stability
    constraint, for gradient-based searches."""
    v, e, peak = self.run_peak(m2)
    pen = np.maximum(1., peak.max(-1) / MAX_GROWTH) ** 2
    with np.errstate(over='ignore', invalid='ignore'):
      f = _fd(self.modes, v, e) * np.where(np.all(m2 == 1., axis=-1), 1., pen)
    return np.where(np.isfinite(f), f, np.inf)

  def fd(self, m2, preconditioned=True):
    v, e = self.run(m2, preconditioned)
    return _fd(self.modes, v, e)

  def alpha_m2(self, alphas):
    """(K, M) m2 = r^2 d^2 of the statistics filter for each alpha (inf: identity)."""
    alphas = np.asarray(alphas, np.float64)
    u = np.where(np.isinf(alphas), 0., 1. / alphas)[:, None]
    r = 1. / (u * (self.s_hat[None, :] - 1.) + 1.)   # = alpha / (S_hat + alpha - 1)
    return r ** 2 * self.d2(list(alphas))

  def vanilla_fd(self):
    m2 = np.ones((1, len(self.modes.s)))
    return float(self.fd(m2, preconditioned=False)[0])


def _problem(freq_stats, sde, N, spec, *, eps=None, space_stats=None, centered=False,
             omega=0.0, mean=None, max_groups=2048, proxy=None):
  """The calibration problem; `proxy` replaces the proxy of freq_stats (e.g. the exact
  oracle, GaussianProxy.from_field(field, stat=R)) while the gains still come from R."""
  if freq_stats is None:
    raise ValueError("the PDS calibration (config.sampling.pds.alpha='auto' or "
                     "config.sampling.pds.filter='calibrated') needs the frequency "
                     'statistics config.sampling.pds.freq_stats (the Gaussian proxy is '
                     'built from R = log(1 + E|F x|^2); scripts/compute_pds_statistics.py '
                     'writes them)')
  if proxy is None:
    proxy = GaussianProxy.from_statistics(freq_stats, centered=centered, mean=mean)
  elif proxy.stat is None:
    proxy = dataclasses.replace(proxy, stat=np.asarray(
        preconditioning.even_part(np.asarray(freq_stats, np.float64)), np.float64))
  shape = proxy.shape
  if N is not None and int(N) != sde.N:
    sde = sde.replace(N=int(N))
  if eps is None:
    eps = 1e-5 if isinstance(sde, sde_lib.VESDE) else 1e-3
  phi = None
  omega = float(omega)
  if omega:
    phi = np.asarray(preconditioning.default_skew_phase(shape), np.float64)
  A = None
  if space_stats is not None:
    A = np.asarray(space_stats, np.float64)
    if A.shape != shape:
      raise ValueError(f'space statistics of shape {A.shape} do not match the frequency '
                       f'statistics {shape}')
  modes = _modes(proxy, phi, by_channel=A is not None, max_groups=max_groups)
  s_hat = modes.stat / np.max(np.asarray(freq_stats, np.float64))
  return _Problem(proxy=proxy, modes=modes, sched=Schedule.create(sde, float(eps),
                                                                  spec.predictor),
                  spec=spec, s_hat=s_hat, omega=omega, space_stat=A)


def _alpha_search(prob):
  """Grid + refinement of log(alpha - 1); returns (alpha, fd, fd_identity, grid dict)."""
  grid = 1. + np.exp(_LOG_AM1)
  fds = prob.fd(prob.alpha_m2(np.append(grid, np.inf)))
  fd_inf, fds = float(fds[-1]), fds[:-1]
  tried_t, tried_fd = list(_LOG_AM1), list(fds)
  j = int(np.argmin(fds))
  pts = _LOG_AM1
  for _ in range(3):
    lo, hi = pts[max(j - 1, 0)], pts[min(j + 1, len(pts) - 1)]
    pts = np.linspace(lo, hi, 17)
    f = prob.fd(prob.alpha_m2(1. + np.exp(pts)))
    tried_t += list(pts)
    tried_fd += list(f)
    j = int(np.argmin(f))
  best = int(np.argmin(tried_fd))
  alpha, fd = 1. + math.exp(tried_t[best]), float(tried_fd[best])
  t_u, first = np.unique(np.asarray(tried_t), return_index=True)
  sweep = {'alpha': 1. + np.exp(t_u), 'fd': np.asarray(tried_fd)[first]}
  if fd_inf <= fd:
    return math.inf, fd_inf, fd_inf, sweep
  return alpha, fd, fd_inf, sweep


def auto_alpha(freq_stats, sde, N, *, predictor, corrector, snr, n_steps=1,
               mode='reference', eta=1.0, eps=None, space_stats=None, centered=False,
               omega=0.0, denoise=True, probability_flow=False, mean=None,
               max_groups=2048, return_info=False):
  """The statistics-filter alpha that minimises the proxy's Frechet distance (F1).

  Args:
    freq_stats: R (H, W, C), data space [0, 1], as `preconditioning.load_statistics`
      returns it.
    sde: the SDE; N: number of sampler steps (sde.N is replaced by it).
    predictor, corrector, snr, n_steps: the PC sampler (sampling.get_pc_sampler names).
    mode, eta: config.sampling.pds.mode / eta.
    eps: the sampler's smallest time (None: 1e-5 VE, 1e-3 VP/subVP; sde_lib.get_sde
      scales it by speed_up).
    space_stats: optional A (H, W, C): the space gain d(alpha) enters through its
      data-weighted mean sum_p A_p d_p^2 / sum_p A_p per channel (module docstring).
    centered: config.data.centered (models see 2 x - 1).
    omega: solenoidal weight (default central-difference phase).
    denoise, probability_flow: sampler options.
    mean: optional known data mean per channel (default: split from the DC statistic).
    max_groups: mode groups before binning (module docstring).
    return_info: also return a dict (fd of the choice, of alpha = inf (the identity in
      this mode) and of the vanilla sampler, the searched grid, seconds, groups).
  Returns:
    alpha > 1, or math.inf (the identity: vanilla) [, info].
  """
  t0 = time.perf_counter()
  spec = SamplerSpec(predictor=str(predictor).lower(), corrector=str(corrector).lower(),
                     snr=float(snr), n_steps=int(n_steps), denoise=bool(denoise),
                     pds_mode=mode, eta=float(eta), probability_flow=bool(probability_flow))
  prob = _problem(freq_stats, sde, N, spec, eps=eps, space_stats=space_stats,
                  centered=centered, omega=omega, mean=mean, max_groups=max_groups)
  alpha, fd, fd_inf, grid = _alpha_search(prob)
  if not return_info:
    return alpha
  info = {'alpha': alpha, 'fd': fd, 'fd_identity': fd_inf, 'fd_vanilla': prob.vanilla_fd(),
          'grid': grid, 'groups': len(prob.modes.s), 'binned': not prob.modes.exact,
          'seconds': time.perf_counter() - t0}
  return alpha, info


def alpha_sweep(freq_stats, sde, N, alphas, *, predictor, corrector, snr, n_steps=1,
                mode='reference', eta=1.0, eps=None, space_stats=None, centered=False,
                omega=0.0, denoise=True, probability_flow=False, mean=None,
                max_groups=2048, proxy=None):
  """Frechet distances (F1) of the statistics filter for many alphas at once, (K,).

  Arguments as `auto_alpha`; `alphas` (K,) numbers > 1 or inf (the identity in `mode`).
  `proxy` (a GaussianProxy, e.g. `GaussianProxy.from_field(oracle)`) replaces the proxy
  of freq_stats as the law the samplers act on, while the filters are still built from
  freq_stats / space_stats: the exact FD on the analytic oracle, for fine sweeps.
  """
  spec = SamplerSpec(predictor=str(predictor).lower(), corrector=str(corrector).lower(),
                     snr=float(snr), n_steps=int(n_steps), denoise=bool(denoise),
                     pds_mode=mode, eta=float(eta), probability_flow=bool(probability_flow))
  prob = _problem(freq_stats, sde, N, spec, eps=eps, space_stats=space_stats,
                  centered=centered, omega=omega, mean=mean, max_groups=max_groups,
                  proxy=proxy)
  alphas = np.asarray(alphas, np.float64).reshape(-1)
  if np.any(~(alphas > 1)):
    raise ValueError(f'alpha_sweep: alphas must be > 1 or inf, got min {alphas.min()}')
  return prob.fd(prob.alpha_m2(alphas))


def _per_group_search(prob, lo=-3., hi=3., n=61, rounds=3):
  """Decoupled modes: each group's own 1-D minimisation of its FD term over log r."""
  M = len(prob.modes.s)
  w, s, mu, dc = prob.modes.weight, prob.modes.s, prob.modes.mu_y, prob.modes.dc

  def terms(logr):                                   # (K, M) -> (K, M)
    v, e, peak = prob.run_peak(np.exp(2. * logr))
    with np.errstate(over='ignore', invalid='ignore'):
      t = w * (np.sqrt(v) - np.sqrt(s)) ** 2 + np.where(dc, (e - mu) ** 2, 0.)
    return np.where(np.isfinite(t) & (peak <= MAX_GROWTH), t, np.inf)

  pts = np.broadcast_to(np.linspace(lo, hi, n)[:, None], (n, M))
  f = terms(pts)
  j = np.argmin(f, axis=0)
  best_x, best_f = pts[j, np.arange(M)], f[j, np.arange(M)]
  step = (hi - lo) / (n - 1)
  for _ in range(rounds):
    pts = best_x[None, :] + np.linspace(-step, step, 17)[:, None]
    f = terms(pts)
    j = np.argmin(f, axis=0)
    better = f[j, np.arange(M)] < best_f
    best_x = np.where(better, pts[j, np.arange(M)], best_x)
    best_f = np.where(better, f[j, np.arange(M)], best_f)
    step /= 8.
  return best_x


def _knot_search(prob, x0, knots):
  """Coupled modes (langevin): log r = piecewise-linear in R / max R, L-BFGS-B on the
  penalised FD (`_Problem.fd_penalised`)."""
  from scipy import optimize
  z = np.linspace(prob.s_hat.min(), prob.s_hat.max(), knots)
  basis = np.stack([np.interp(prob.s_hat, z, np.eye(knots)[j]) for j in range(knots)])
  h = 1e-4

  def fun(x):
    X = x[None, :] + np.concatenate([np.zeros((1, knots)), h * np.eye(knots),
                                     -h * np.eye(knots)])
    f = prob.fd_penalised(np.exp(2. * X @ basis))
    if not np.all(np.isfinite(f)):
      return float(f[0]) if np.isfinite(f[0]) else 1e300, np.zeros(knots)
    return float(f[0]), (f[1:knots + 1] - f[knots + 1:]) / (2 * h)

  x_init = np.interp(z, prob.s_hat, x0) if x0 is not None else np.zeros(knots)
  res = optimize.minimize(fun, x_init, jac=True, method='L-BFGS-B',
                          bounds=[(-3., 3.)] * knots, options={'maxiter': 200})
  return res.x @ basis


def calibrate_gain(freq_stats, sde, N, *, predictor, corrector, snr, n_steps=1,
                   mode='reference', eta=1.0, eps=None, centered=False, omega=0.0,
                   denoise=True, probability_flow=False, mean=None, max_groups=2048,
                   knots=8, return_info=False):
  """Per-frequency PDS gains r(k) (H, W, C) optimised on the proxy (module docstring).

  The gain is a function of the statistic, hence even in k and positive; the space gain
  is 1. Arguments as `auto_alpha` (no space statistic); `knots` is the number of knots
  of log r(R / max R) when the langevin corrector couples the modes.
  Returns:
    float32 (H, W, C) gain [, info dict: fd of the gain, of the auto alpha filter it is
    never worse than, of vanilla, the auto alpha, seconds, groups].
  """
  t0 = time.perf_counter()
  spec = SamplerSpec(predictor=str(predictor).lower(), corrector=str(corrector).lower(),
                     snr=float(snr), n_steps=int(n_steps), denoise=bool(denoise),
                     pds_mode=mode, eta=float(eta), probability_flow=bool(probability_flow))
  prob = _problem(freq_stats, sde, N, spec, eps=eps, centered=centered, omega=omega,
                  mean=mean, max_groups=max_groups)
  alpha, fd_alpha, fd_inf, _ = _alpha_search(prob)
  logr_alpha = 0.5 * np.log(prob.alpha_m2([alpha])[0])
  if spec.corrector == 'langevin':
    logr = _knot_search(prob, logr_alpha, knots)
    how = f'log r piecewise linear in R / max R ({knots} knots), L-BFGS-B'
  else:
    logr = _per_group_search(prob)
    how = 'per mode group (decoupled)'
  fd = float(prob.fd(np.exp(2. * logr)[None])[0])
  if not fd < fd_alpha:        # never worse than the alpha filter on the proxy
    logr, fd, how = logr_alpha, fd_alpha, f'alpha filter (alpha={alpha:g})'
  gain = np.exp(logr)[prob.modes.index].astype(np.float32)
  gain = preconditioning.even_part(gain)
  if not return_info:
    return gain
  info = {'fd': fd, 'fd_alpha': fd_alpha, 'alpha': alpha, 'fd_identity': fd_inf,
          'fd_vanilla': prob.vanilla_fd(), 'method': how, 'groups': len(prob.modes.s),
          'binned': not prob.modes.exact, 'seconds': time.perf_counter() - t0}
  return gain, info


# ----------------------------------------------------------------------------- gain files


def save_gain(path, gain, **metadata):
  """Writes a calibrated gain as a statistics-like .npz ('freq' key, (H, W, C)) that
  `preconditioning.load_statistics(path, kind='freq')` reads; metadata 'content' marks it
  as a gain (not a statistic)."""
  if not str(path).endswith('.npz'):
    raise ValueError(f'calibrated gain files are .npz, got {path!r}')
  preconditioning.save_statistics(path, freq=gain, content=GAIN_CONTENT, **metadata)


def load_gain(path, shape=None, key='config.sampling.pds.gain_file'):
  """(gain (H, W, C) float32, metadata dict) of a `save_gain` file."""
  gain = preconditioning.load_statistics(path, shape=shape, kind='freq')
  with np.load(path, allow_pickle=False) as f:
    meta = {k: f[k].item() for k in f.files if k not in ('freq', 'space') and f[k].ndim == 0}
  if meta.get('content') != GAIN_CONTENT:
    raise ValueError(f'{key}={path!r} is not a calibrated gain file (no content='
                     f'{GAIN_CONTENT!r}; statistics files go to freq_stats / space_stats): '
                     'write it with scripts/calibrate_pds.py')
  return gain, meta


# ----------------------------------------------------------------------------- config


def config_kwargs(config):
  """Keyword arguments of `auto_alpha` / `calibrate_gain` / `predicted_fd` for a config:
  its SDE and N (speed_up applied), eps, sampler, PDS mode/eta/omega and data scaling."""
  s = config.sampling
  if str(s.method).lower() != 'pc':
    raise ValueError(f"the PDS calibration (config.sampling.pds.alpha='auto' or "
                     f"config.sampling.pds.filter='calibrated') calibrates the PC sampler; "
                     f'config.sampling.method={s.method!r} is not preconditioned')
  sde, eps = sde_lib.get_sde(config)
  if not isinstance(sde, (sde_lib.VESDE, sde_lib.VPSDE, sde_lib.subVPSDE)):
    raise ValueError(f'the PDS calibration supports config.training.sde vesde, vpsde and '
                     f'subvpsde, got {config.training.sde!r}')
  spec = SamplerSpec.from_config(config)
  return dict(sde=sde, N=sde.N, predictor=spec.predictor, corrector=spec.corrector,
              snr=spec.snr, n_steps=spec.n_steps, mode=spec.pds_mode, eta=spec.eta,
              eps=eps, centered=bool(config.data.centered),
              omega=float(s.pds.get('omega', 0.) or 0.), denoise=spec.denoise,
              probability_flow=spec.probability_flow,
              max_groups=int(s.pds.get('calibration_groups', 2048)))


def config_supported(config):
  """True when `config_kwargs` (and so the calibration) covers the config's sampler."""
  try:
    kw = config_kwargs(config)
  except ValueError:
    return False
  return supports(kw['sde'], kw['predictor'], kw['corrector'])


def predicted_fd(freq_stats, sde, N, *, predictor, corrector, snr, n_steps=1,
                 mode='reference', eta=1.0, eps=None, space_stats=None, centered=False,
                 omega=0.0, denoise=True, probability_flow=False, mean=None,
                 max_groups=2048, alpha=None, gain=None):
  """The proxy's FD (F1) of a statistics filter (`alpha`, inf: identity) or of a
  frequency gain (H, W, C) (`gain`), and of the vanilla sampler: (fd, fd_vanilla)."""
  spec = SamplerSpec(predictor=str(predictor).lower(), corrector=str(corrector).lower(),
                     snr=float(snr), n_steps=int(n_steps), denoise=bool(denoise),
                     pds_mode=mode, eta=float(eta), probability_flow=bool(probability_flow))
  if gain is not None:
    space_stats = None
  prob = _problem(freq_stats, sde, N, spec, eps=eps, space_stats=space_stats,
                  centered=centered, omega=omega, mean=mean, max_groups=max_groups)
  if gain is not None:   # per-group mean of r^2 (exact for gains constant on the groups)
    g2 = np.broadcast_to(np.asarray(gain, np.float64), prob.proxy.shape) ** 2
    idx = prob.modes.index.reshape(-1)
    m2 = (np.bincount(idx, weights=g2.reshape(-1), minlength=len(prob.modes.s))
          / prob.modes.weight)[None]
  else:
    m2 = prob.alpha_m2([math.inf if alpha is None else float(alpha)])
  return float(prob.fd(m2)[0]), prob.vanilla_fd()


# ----------------------------------------------------------------------------- pilot check

# pilot ladder of alpha='auto' (module docstring, 'Pilot check'): the proxy's alpha times
# PILOT_RATIO^j from j = -1 up to the first candidate >= PILOT_TOP, then inf
PILOT_RATIO = 2.
PILOT_TOP = 20.
PILOT_MIN_ALPHA = 1.1


def pilot_candidates(alpha_proxy, ratio=PILOT_RATIO, top=PILOT_TOP):
  """The alphas the pilot check of alpha='auto' samples with, [float] ending in inf.

  The proxy's choice a, one step below it (a / ratio, if >= PILOT_MIN_ALPHA) and steps
  above it (a * ratio^j) up to the first one >= top, then inf (vanilla). A proxy choice of
  inf gives [inf]: nothing to check.
  """
  a = float(alpha_proxy)
  if not a > 1:
    raise ValueError(f'pilot_candidates: alpha must be > 1 or inf, got {alpha_proxy!r}')
  if not ratio > 1:
    raise ValueError(f'pilot_candidates: ratio must be > 1, got {ratio!r}')
  if math.isinf(a):
    return [math.inf]
  out = [a / ratio] if a / ratio >= PILOT_MIN_ALPHA else []
  out.append(a)
  while out[-1] < top:
    out.append(out[-1] * ratio)
  return out + [math.inf]


def spectral_fd(samples, freq_stats, clip=True):
  """Frechet distance between the power spectra of samples and of the data: the pilot
  check's score of a sampler output (module docstring, 'Pilot check').

    FD_spec = sum_{k,c} (sqrt(P_hat(k) / HW) - sqrt(P(k) / HW))^2,
    P = e^R - 1 = E|F x01|^2 (the statistic),  P_hat = mean_n |F x_n|^2,

  i.e. (F1) between two zero-mean stationary Gaussians whose spectra are the uncentred
  powers, in data space [0, 1]. It uses only what R holds (no split of the DC power into
  mean and variance, which the proxy has to guess), so its value differs from the proxy's
  (F1) by a constant-ish DC term, and it can be compared across samplers on the same
  statistic.

  Args:
    samples: (n, H, W, C) sampler outputs in data space [0, 1] (after the inverse scaler).
    freq_stats: R (H, W, C) as `preconditioning.load_statistics` returns it.
    clip: clip samples to [0, 1] first (what is saved as an image).
  Returns:
    float; inf if a sample is not finite.
  """
  x = np.asarray(samples, np.float64)
  R = np.asarray(freq_stats, np.float64)
  if R.ndim != 3 or x.ndim != 4 or x.shape[1:] != R.shape:
    raise ValueError(f'spectral_fd: samples must be (n, H, W, C) with (H, W, C) the '
                     f'statistic\'s shape {R.shape}, got {x.shape}')
  if not np.all(np.isfinite(x)):
    return math.inf
  p_hat = _power_maps(x, R.shape, clip=clip).mean(0, dtype=np.float64)   # P_hat / HW
  return float(_spectral_distance(p_hat, _power_target(R)))


def _power_target(R):
  """(H*W*C,) sqrt(P / HW), P = e^R - 1: the statistic's side of the spectral FD."""
  return np.sqrt(np.expm1(R).reshape(-1) / (R.shape[0] * R.shape[1]))


def _spectral_distance(p, target):
  """The spectral FD of mean power maps p (..., H*W*C) (P_hat / HW) against `target`."""
  return np.sum((np.sqrt(np.maximum(p, 0.)) - target) ** 2, axis=-1)


POWER_CHUNK_ELEMENTS = 1 << 24   # float64 FFT work per chunk of _power_maps (~270 MB)


def _power_maps(samples, shape, clip=True):
  """(n, H*W*C) float32 |F x_n|^2 / HW of data-space samples (clipped to [0, 1]).

  The float64 FFT runs over chunks of samples of at most POWER_CHUNK_ELEMENTS numbers, so
  the transient memory stays ~16 bytes x that however large the images (32 FFHQ-1024
  pilot samples would otherwise take ~3 GB at once); the output is float32.
  """
  x = np.asarray(samples)
  if x.ndim != 4 or x.shape[1:] != tuple(shape):
    raise ValueError(f'pilot samples must be (n, H, W, C) with (H, W, C) = {tuple(shape)}, '
                     f'got {x.shape}')
  hw = shape[0] * shape[1]
  out = np.empty((len(x), int(np.prod(shape))), np.float32)
  step = max(1, POWER_CHUNK_ELEMENTS // max(out.shape[1], 1))
  for i in range(0, len(x), step):
    c = np.asarray(x[i:i + step], np.float64)
    if clip:
      c = np.clip(c, 0., 1.)
    out[i:i + step] = (np.abs(np.fft.fft2(c, axes=(1, 2))) ** 2 / hw).reshape(len(c), -1)
  return out


def pilot_choice(alphas, samples, freq_stats, proxy_alpha, *, confidence=0.9, n_boot=200,
                 seed=0):
  """The pilot check's decision among the candidate alphas (module docstring, 'Pilot
  check').

  Each candidate's pilot samples (the same per-sample keys for all candidates: common
  random numbers) are scored by `spectral_fd`. A candidate is *beaten* when the
  best-scoring one has the lower score in at least need = 1 - (1 - confidence) / (K - 1)
  of `n_boot` paired bootstrap resamples of the pilot samples (the same resampled indices
  for both; Bonferroni over the K - 1 comparisons). The choice is the candidate nearest
  to the proxy's alpha (in log alpha; the weaker filter on a tie, vanilla last) that is
  not beaten: the proxy's alpha itself unless the pilot shows it losing, so pilot noise
  alone rarely moves it, and otherwise the least change that the pilot cannot tell from
  the best.

  Args:
    alphas: [K] candidate alphas (`pilot_candidates`), inf = vanilla.
    samples: [K] arrays (n, H, W, C), data space [0, 1]; non-finite = diverged (beaten).
    freq_stats: R (H, W, C).
    proxy_alpha: the proxy's choice (one of `alphas`).
    confidence, n_boot, seed: the bootstrap test (deterministic for a seed).
  Returns:
    (alpha, info): info has 'alphas', 'spectral_fd' (K, on all pilot samples),
    'beaten_share' (K, the bootstrap share in which the best-scoring candidate beats each),
    'need' (the share that counts as beaten), 'chosen_by' ('proxy' or 'pilot').
  """
  alphas = [float(a) for a in alphas]
  if len(samples) != len(alphas):
    raise ValueError(f'pilot_choice: {len(alphas)} alphas but {len(samples)} sample sets')
  _check_decision_args(alphas, proxy_alpha, confidence)
  scorer = PilotScorer(freq_stats, len(samples[0]) if len(samples) else 0, seed=seed,
                       n_boot=n_boot)
  for x in samples:
    scorer.add(x)
  return pilot_decide(alphas, scorer.full, scorer.boot, proxy_alpha, confidence=confidence)


class PilotScorer:
  """Scores pilot candidates one at a time (`pilot_choice`'s first half), so a caller can
  drop each candidate's samples once scored: only (n_boot,) numbers per candidate stay.

  Args:
    freq_stats: R (H, W, C). n: pilot samples per candidate. seed, n_boot: the paired
      bootstrap (the same resampled indices for every candidate).
  Attributes:
    full: [K] spectral FD of each added candidate on all its samples (inf if diverged).
    boot: [K] (n_boot,) the FD on each bootstrap resample.
  """

  def __init__(self, freq_stats, n, *, seed=0, n_boot=200):
    R = np.asarray(freq_stats, np.float64)
    self.shape, self.n, self.n_boot = R.shape, int(n), int(n_boot)
    self.target = _power_target(R)
    idx = np.random.default_rng(seed).integers(0, self.n, size=(self.n_boot, self.n))
    self.weights = np.zeros((self.n_boot, self.n))         # bootstrap resample counts / n
    np.add.at(self.weights, (np.arange(self.n_boot)[:, None], idx), 1. / self.n)
    self.full, self.boot = [], []

  def add(self, x):
    """Scores one candidate's samples x (n, H, W, C), data space [0, 1]."""
    if len(x) != self.n:
      raise ValueError('pilot_choice: every candidate needs the same number of samples')
    if not np.all(np.isfinite(np.asarray(x))):
      self.full.append(math.inf)
      self.boot.append(np.full(self.n_boot, math.inf))
      return
    p = _power_maps(x, self.shape)
    self.full.append(float(_spectral_distance(p.mean(0, dtype=np.float64), self.target)))
    b = np.empty(self.n_boot)
    for i in range(0, self.n_boot, 16):                    # chunks bound the memory
      b[i:i + 16] = _spectral_distance(self.weights[i:i + 16] @ p, self.target)
    self.boot.append(b)


def _check_decision_args(alphas, proxy_alpha, confidence):
  if float(proxy_alpha) not in alphas:
    raise ValueError(f'pilot_choice: proxy_alpha {proxy_alpha} is not among {alphas}')
  if not 0.5 <= confidence < 1:
    raise ValueError(f'pilot_choice: confidence must be in [0.5, 1), got {confidence}')


def pilot_decide(alphas, full, boot, proxy_alpha, *, confidence=0.9):
  """`pilot_choice`'s decision from the candidates' scores (`PilotScorer.full` / `boot`);
  returns (alpha, info) as `pilot_choice` does."""
  alphas = [float(a) for a in alphas]
  if len(full) != len(alphas) or len(boot) != len(alphas):
    raise ValueError(f'pilot_choice: {len(alphas)} alphas but {len(full)} scored candidates')
  _check_decision_args(alphas, proxy_alpha, confidence)
  j0 = alphas.index(float(proxy_alpha))
  best = int(np.argmin(full))
  need = 1. - (1. - confidence) / max(len(alphas) - 1, 1)
  with np.errstate(invalid='ignore'):
    beaten_share = [0. if k == best else float(np.mean(boot[best] < b))
                    for k, b in enumerate(boot)]
  beaten = [math.isinf(full[k]) or beaten_share[k] >= need for k in range(len(alphas))]
  la0 = math.log(alphas[j0])
  dist = lambda k: (math.inf if math.isinf(alphas[k]) else abs(math.log(alphas[k]) - la0),
                    -alphas[k])
  choice = min((k for k in range(len(alphas)) if not beaten[k]), key=dist, default=best)
  chosen_by = 'proxy' if choice == j0 else 'pilot'
  return alphas[choice], {'alphas': alphas, 'spectral_fd': full,
                          'beaten_share': beaten_share, 'need': need, 'chosen_by': chosen_by}

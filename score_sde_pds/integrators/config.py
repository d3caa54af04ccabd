"""config.sampling -> conjugate / splitting samplers (called by sampling.get_sampler_from_config).

Keys (configs/default_configs.py): sampling.method ('conjugate' | 'splitting'),
sampling.integrator (conjugate rule or splitting scheme; '' -> 'euler' / 'cvv'),
sampling.lam, sampling.b_matrix, sampling.eps_frame, sampling.grid, sampling.num_steps
(0 -> sde.N),
sampling.noise_scale, sampling.noise_removal (conjugate: the final step to t = 0),
sampling.pds.* (the spectral B of b_matrix='spectral'; PDS in the splitting O steps).
"""
from __future__ import annotations

import numpy as np

from score_sde_pds.integrators import common
from score_sde_pds.integrators.conjugate import get_conjugate_sampler
from score_sde_pds.integrators.splitting import SPLITTING_SCHEMES, get_splitting_sampler

METHODS = ('conjugate', 'splitting')
DEFAULT_INTEGRATOR = {'conjugate': 'euler', 'splitting': 'cvv'}


def num_steps(config, sde) -> int:
  """config.sampling.num_steps, 0 -> sde.N (= int(num_scales / speed_up))."""
  n = config.sampling.get('num_steps', 0) or 0
  if not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f'config.sampling.num_steps must be an integer >= 0 (0: N = num_scales / '
                     f'speed_up), got {n!r}.')
  return int(n) or int(sde.N)


def spectral_gain(preconditioner, shape):
  """Fourier gain g = r^2 of the PDS frequency filter (H, W, C) for b_matrix='spectral'.

  Without a preconditioner (config validation builds samplers without one) the gain is 1.
  """
  if preconditioner is None:
    return np.ones(tuple(shape[1:]))
  if not preconditioner.use_freq:
    raise ValueError("config.sampling.b_matrix='spectral' needs a PDS frequency gain: set "
                     'config.sampling.pds.freq_stats (or pds.filter=parametric); the space '
                     'statistic alone has none.')
  r = np.broadcast_to(np.asarray(preconditioner.freq_gain, np.float64), tuple(shape[1:]))
  return r ** 2


def get_sampler_from_config(config, sde, shape, eps, preconditioner=None):
  """The conjugate/splitting sampler of config.sampling (and the errors for CLD/PSLD with
  the methods that do not support them)."""
  s = config.sampling
  method = str(s.method).lower()
  pds = s.get('pds', None)
  pds_on = bool(pds is not None and pds.get('enabled', False))
  if method not in METHODS:
    if getattr(sde, 'is_augmented', False):
      raise ValueError(
          f'config.sampling.method={s.method!r} does not support the phase-space SDE '
          f'config.training.sde={config.training.sde!r} (its state is [x; m]); use '
          "method='conjugate' or 'splitting'. (sampling.get_pc_sampler itself runs on the "
          'stacked state shape (B, H, W, 2C).)')
    raise ValueError(f'config.sampling.method={s.method!r} is not known; valid: '
                     f"['conjugate', 'ode', 'pc', 'splitting'].")
  integrator = str(s.get('integrator', '') or DEFAULT_INTEGRATOR[method]).lower()
  grid = str(s.get('grid', 'uniform')).lower()
  try:
    lam = float(s.get('lam', 0.))
  except (TypeError, ValueError):
    raise ValueError(f'config.sampling.lam must be a number, got {s.get("lam")!r}.') from None
  n = num_steps(config, sde)
  eps_frame = str(s.get('eps_frame', 'cholesky')).lower()
  if method == 'conjugate':
    b_matrix = str(s.get('b_matrix', 'identity')).lower()
    gain = None
    if b_matrix == 'spectral':
      if not pds_on:
        raise ValueError("config.sampling.b_matrix='spectral' takes its B from the PDS frequency "
                         'statistics: set config.sampling.pds.enabled=True (with pds.freq_stats, '
                         'or no files for the analytic oracle).')
      gain = spectral_gain(preconditioner, shape)
    elif pds_on:
      raise ValueError("config.sampling.pds.enabled=True has no effect with config.sampling."
                       "method='conjugate' unless config.sampling.b_matrix='spectral'.")
    return get_conjugate_sampler(sde, shape, num_steps=n, lam=lam, grid=grid, eps=eps,
                                 denoise=bool(s.get('noise_removal', False)), rule=integrator,
                                 b_matrix=b_matrix, spectral_gain=gain, eps_frame=eps_frame,
                                 preconditioner=preconditioner if pds_on else None)
  if integrator in SPLITTING_SCHEMES and pds_on and not SPLITTING_SCHEMES[integrator].stochastic:
    raise ValueError(f'config.sampling.pds.enabled=True preconditions the Langevin (O) steps of '
                     f"the stochastic splitting schemes; integrator={integrator!r} has none.")
  if integrator == 'sscs' and pds_on:
    raise ValueError("config.sampling.pds.enabled=True: integrator='sscs' has no O step to "
                     "precondition; use 'oba', 'baoab' or 'roba'.")
  if grid not in common.GRIDS:
    raise ValueError(f'config.sampling.grid={grid!r} is not known; valid: {list(common.GRIDS)}.')
  return get_splitting_sampler(sde, shape, integrator=integrator, num_steps=n, eps=eps,
                               grid=grid, noise_scale=s.get('noise_scale', 1.), lam=lam,
                               eps_frame=eps_frame,
                               preconditioner=preconditioner if pds_on else None)

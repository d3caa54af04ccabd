"""scripts/integrator_curves.py end to end on a 4x4x1 VP oracle (two budgets, three rows).

The exact Frechet distance the script reports for DDIM (conjugate Euler, B = 0) is checked
against a closed form written here: per Fourier mode the DDIM step on the Gaussian oracle
multiplies the deviation d = x - a_t mu by
  r = a'/a (1 - s_t^2 / lam_t) + s' s_t / lam_t,   lam_t = a_t^2 S(k) + s_t^2,
so x_eps = a_eps mu + prod(r) (x_T - a_T mu) with x_T ~ N(0, I), and
  FD = sum_k (sqrt(K_k) - sqrt(S_k))^2 + sum_pixels (E x_eps - mu)^2,  K_k = prod(r_k)^2.
"""
import csv
import os
import subprocess
import sys

import numpy as np

from configs.analytic import gaussian_field_vp
from score_sde_pds.models import analytic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, C = 4, 1


def _config():
  config = gaussian_field_vp.get_config()
  config.data.image_size = H
  config.data.num_channels = C
  return config


def ddim_exact_fd(config, N, eps=1e-3):
  field = analytic.GaussianField.from_config(config)
  S = np.asarray(field.spectrum, np.float64)                     # (H, W, C)
  mu = np.asarray(field.mean, np.float64)
  bmin, bmax = config.model.beta_min, config.model.beta_max

  def a_s(t):
    a = np.exp(-0.25 * t ** 2 * (bmax - bmin) - 0.5 * t * bmin)
    return a, np.sqrt(1. - a ** 2)

  ts = 1. - np.arange(N + 1) * (1. - eps) / N
  r = np.ones_like(S)
  for t0, t1 in zip(ts[:-1], ts[1:]):
    (a, s), (a1, s1) = a_s(t0), a_s(t1)
    lam = a ** 2 * S + s ** 2
    r = r * (a1 / a * (1. - s ** 2 / lam) + s1 * s / lam)
  a_T, a_e = a_s(1.)[0], a_s(eps)[0]
  mean_out = a_e * mu - r[0, 0] * a_T * mu                        # DC mode carries the mean
  return float(np.sum((r - np.sqrt(S)) ** 2) + H * H * np.sum((mean_out - mu) ** 2))


def test_script_writes_curves_with_exact_ddim_fd(tmp_path):
  out = tmp_path / 'vp'
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'integrator_curves.py'),
         '--config', os.path.join(ROOT, 'configs', 'analytic', 'gaussian_field_vp.py'),
         f'--config.data.image_size={H}', f'--config.data.num_channels={C}',
         '--out', str(out), '--nfes', '4,16', '--samplers', 'conj euler B=0,conj ab2',
         '--ode_tols', '1e-2', '--mc_samples', '64', '--compilation_cache',
         os.environ.get('JAX_COMPILATION_CACHE_DIR', '')]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / 'curves.csv') as f:
    rows = list(csv.DictReader(f))
  got = {(r['sampler'], int(r['nfe_budget'])): r for r in rows}
  assert len(rows) == 5 and {r['fd_kind'] for r in rows} == {'exact', 'mc'}
  for n in (4, 16):
    row = got[('conj euler B=0', n)]
    assert int(row['nfe']) == int(row['num_steps']) == n
    np.testing.assert_allclose(float(row['fd']), ddim_exact_fd(_config(), n), rtol=2e-3)
  # the second-order multistep rule beats DDIM at 16 evaluations, and both improve with NFE
  assert float(got[('conj ab2', 16)]['fd']) < float(got[('conj euler B=0', 16)]['fd'])
  for name in ('conj euler B=0', 'conj ab2'):
    assert float(got[(name, 16)]['fd']) < float(got[(name, 4)]['fd'])
  ode = [r for r in rows if r['family'] == 'ode']
  assert len(ode) == 1 and int(ode[0]['nfe']) > 0 and np.isfinite(float(ode[0]['fd']))
  md = (out / 'curves.md').read_text()
  assert '| conj ab2 |' in md and 'NFE 16' in md
  assert (out / 'curves.png').read_bytes()[:4] == b'\x89PNG'

"""The PDS ablation sweep (score_sde_pds/sweep.py, scripts/sweep.py) on the analytic oracle.

One module-scoped sweep (8x8x3 ill-conditioned oracle, field_beta=4, N=20,
reverse_diffusion without corrector, five alphas) feeds tests 1 and 3; test 2 runs
the script end to end.
"""
import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.analytic import gaussian_field
from score_sde_pds import calibration, sampling, sde_lib, sweep
from score_sde_pds.models import analytic
from score_sde_pds.models import utils as mutils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, 'configs', 'analytic', 'gaussian_field.py')
ALPHAS = (1.5, 2., 3., 5., 8.)
NUM_SAMPLES = 512
SHAPE = (8, 8, 3)


def _config(n=20, beta=4.):
  c = gaussian_field.get_config()
  c.data.image_size = SHAPE[0]
  c.model.num_scales = n
  c.model.field_beta = beta
  c.sampling.predictor = 'reverse_diffusion'
  c.sampling.corrector = 'none'
  return c


@pytest.fixture(scope='module')
def swept():
  config = _config()
  grid = sweep.Grid(filters=('statistics',), alphas=ALPHAS, num_samples=NUM_SAMPLES)
  return config, sweep.run_sweep(config, grid=grid, keep_samples=True)


@pytest.fixture(scope='module')
def separate(swept):
  """Each cell sampled on its own through the ordinary config path (run_lib's)."""
  config, _ = swept
  sde, eps = sde_lib.get_sde(config)
  model, states, params = mutils.init_model(jax.random.PRNGKey(0), config)
  fn = sampling.get_sampling_fn(config, sde, model, (NUM_SAMPLES,) + SHAPE, eps)
  stats = sweep.oracle_statistics(config)
  rng = jax.random.PRNGKey(int(config.sampling.seed))
  out = {}
  for a in ALPHAS:
    p = sweep.build_preconditioner(sweep.FilterSetting('statistics', alpha=a), SHAPE, stats)
    out[a] = np.asarray(fn(rng, params, states, offset=0, preconditioner=p)[0])
  return out, fn, params


# ----------------------------------------------------------------------------- test 1


def test_vmapped_grid_equals_separate_runs_and_compiles_once(swept, separate):
  config, res = swept
  out, fn, _ = separate
  grid_rows = [r for r in res.rows if r['filter'] == 'statistics']
  assert [r['alpha'] for r in grid_rows] == list(ALPHAS)
  for (_, s), x in res.samples.items():
    if s.filter == 'statistics':
      np.testing.assert_allclose(x, out[s.alpha], rtol=1e-5, atol=1e-5,
                                 err_msg=f'alpha={s.alpha}')
  # the ordinary path also compiled once for all five alphas (the preconditioner is an argument)
  assert fn.jitted._cache_size() == 1
  # one program for the whole alpha grid (+ one for the vanilla row)
  progs = res.programs
  assert [p['cells'] for p in progs] == [1, len(ALPHAS)]
  assert all(p['cache_size'] == 1 for p in progs)
  assert {r['program'] for r in grid_rows} == {1}
  # another alpha grid of the same size: same program, no recompilation
  runner, params = progs[1]['runner'], separate[2]
  stats = sweep.oracle_statistics(config)
  other = sweep.stack_preconditioners([
      sweep.build_preconditioner(sweep.FilterSetting('statistics', alpha=a), SHAPE, stats)
      for a in (1.2, 2.5, 4., 10., 100.)])
  x, bad = runner(jax.random.PRNGKey(0), params, {}, other, 0)
  assert x.shape == (5, NUM_SAMPLES) + SHAPE and bad.shape == (5,)
  assert runner.cache_size() == 1


def test_stacking_groups_and_the_omega_leaf():
  config = _config()
  stats = sweep.oracle_statistics(config)
  S = sweep.FilterSetting
  grid = [S('statistics', alpha=3., omega=0.), S('statistics', alpha=3., omega=0.2),
          S('parametric', radius=1.6, lam=1.5, omega=0.)]
  plain = [sweep.build_preconditioner(s, SHAPE, stats) for s in grid]
  assert [p.use_skew for p in plain] == [False, True, False]
  assert len(sweep.group_by_structure(plain)) == 3
  with pytest.raises(ValueError, match='cannot be stacked'):
    sweep.stack_preconditioners(plain[:2])
  skewed = [sweep.build_preconditioner(s, SHAPE, stats, skew=True) for s in grid]
  # omega is a leaf: the two statistics members stack; the parametric one has no space gain
  assert sweep.group_by_structure(skewed) == [[0, 1], [2]]
  stacked = sweep.stack_preconditioners(skewed[:2])
  np.testing.assert_array_equal(stacked.omega, np.float32([0., 0.2]))
  assert stacked.freq_gain.shape == (2,) + SHAPE
  # the omega=0 member with the skew term on is exactly the plain one
  g = jax.random.normal(jax.random.PRNGKey(1), (4,) + SHAPE)
  np.testing.assert_array_equal(skewed[0].drift(g), plain[0].drift(g))
  np.testing.assert_array_equal(sweep.unstack(stacked, 1).drift(g), plain[1].drift(g))


# ----------------------------------------------------------------------------- test 3


def test_oracle_sanity_fd_matches_direct_and_exact_prediction(swept, separate):
  config, res = swept
  out, _, _ = separate
  field = analytic.GaussianField.from_config(config)
  rows = {(r['filter'], r['alpha']): r for r in res.rows}
  vanilla = rows[('vanilla', None)]
  assert np.isfinite(vanilla['fd']) and vanilla['nonfinite_step'] == -1
  assert vanilla['nfe'] == 20 and vanilla['N'] == 20
  # the reported FD of a cell is analytic.frechet_distance of that cell's own samples
  for a in (3., 5.):
    direct = analytic.frechet_distance(out[a], field)
    assert rows[('statistics', a)]['fd'] == pytest.approx(direct, rel=1e-4)
  # the estimator floor is analytic.frechet_distance of exact samples
  assert 0 < res.floor['fd'] < vanilla['fd']

  # exact prediction: on the oracle this sampler is linear and Fourier-diagonal, so the
  # per-frequency output variance is known in closed form; the samples must follow it
  sde, eps = sde_lib.get_sde(config)
  stats = sweep.oracle_statistics(config)
  exact = {}
  for (_, s), x in res.samples.items():
    p = sweep.build_preconditioner(s, SHAPE, stats)
    ex = calibration.exact_moments(field, sde, eps, p, 'reverse_diffusion', 'none')
    exact[s.alpha] = ex['fd']
    assert rows[(s.filter, s.alpha)]['fd_exact'] == pytest.approx(ex['fd'], rel=1e-9)
    if ex['fd'] > 1e3:
      continue  # diverged: float32 FFT round-off of the exploding modes swamps the rest
    spec = analytic.measured_spectrum(x)
    # 512 samples: ~4.4% (6.3% on self-conjugate frequencies) relative noise per frequency
    assert np.max(np.abs(np.log(spec / ex['spectrum']))) < 0.3, s.label
  # alpha = 1.5 is unstable at N = 20 (gain^2 up to 9 on the weak high frequencies),
  # alpha = 3 is the exact optimum of this grid and beats vanilla by > 2x (0.299 vs 0.885)
  order = sorted(ALPHAS, key=lambda a: exact[a])
  assert order[0] == 3. and order[-1] == 1.5
  assert exact[1.5] > 1e6 * exact[None] and exact[3.] < exact[None] / 2
  # the reported (sample) FD orders the cells as the exact FD does wherever the exact
  # values differ by more than the estimator floor
  fd = {a: rows[('statistics', a)]['fd'] for a in ALPHAS}
  fd[None] = vanilla['fd']
  keys = list(fd)
  for a in keys:
    for b in keys:
      if exact[a] + res.floor['fd'] < exact[b]:
        assert fd[a] < fd[b], (a, b, fd, exact)


# ----------------------------------------------------------------------------- test 2


def test_script_end_to_end(tmp_path):
  w = tmp_path / 'w'
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'sweep.py'), f'--config={CFG}',
         f'--workdir={w}', '--alphas=2,5', '--omegas=0,0.1',
         '--samplers=reverse_diffusion:none', '--num_samples=64',
         f'--compilation_cache={os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}',
         '--config.data.image_size=8', '--config.model.num_scales=10']
  res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert sorted(os.listdir(w)) == ['sweep.csv', 'sweep.md', 'sweep.png']
  with open(w / 'sweep.csv') as f:
    recs = list(csv.DictReader(f))
  assert tuple(recs[0]) == sweep.CSV_COLUMNS
  got = [(r['filter'], r['alpha'], r['omega']) for r in recs]
  assert got == [('vanilla', '', ''), ('statistics', '2', '0'), ('statistics', '5', '0'),
                 ('statistics', '2', '0.1'), ('statistics', '5', '0.1')]
  for r in recs:
    assert r['N'] == '10' and r['nfe'] == '10' and r['predictor'] == 'reverse_diffusion'
    assert r['corrector'] == 'none' and r['snr'] == ''
    assert np.isfinite(float(r['fd'])) and float(r['fd']) > 0
    assert np.isfinite(float(r['fd_exact'])) and float(r['seconds']) >= 0
  assert len({r['program'] for r in recs}) == 2      # vanilla + ONE program for the grid
  rows = sweep.rows_from_csv((w / 'sweep.csv').read_text())
  best = sweep.best_per_n(rows)[10]
  md = (w / 'sweep.md').read_text()
  bold = [ln for ln in md.splitlines() if ln.startswith('| **')]
  assert len(bold) == 1 and f'**{sweep._fmt(rows[best]["fd"], 5)}**' in bold[0]
  assert (w / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # a bad option fails before any compute, naming it
  bad = subprocess.run(cmd[:-2] + ['--samplers=reverse_difusion:none'], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
  assert bad.returncode == 1 and 'reverse_difusion' in bad.stderr


def test_outputs_without_metric():
  """Network models have no metric: NaN rows still give a table (with the note) and a plot."""
  rows = []
  for n in (10, 20):
    for filt, a in (('vanilla', None), ('statistics', 2.), ('statistics', 5.)):
      rows.append(dict(filter=filt, alpha=a, radius=None, lam=None,
                       omega=None if a is None else 0., N=n, num_scales=n, speed_up=1.,
                       predictor='reverse_diffusion', corrector='langevin', snr=0.16, nfe=2 * n,
                       fd=float('nan'), spec_err=float('nan'), fd_exact=float('nan'),
                       spec_err_exact=float('nan'), seconds=0.1, compile_seconds=1.,
                       nonfinite_step=-1, num_samples=8, program=0))
  res = sweep.SweepResult(rows=rows, programs=[], note=sweep.NO_METRIC_NOTE)
  md = sweep.markdown(res)
  assert sweep.NO_METRIC_NOTE in md and '**' not in md
  assert sweep.plot_png(res)[:4] == b'\x89PNG'
  back = sweep.rows_from_csv(sweep.csv_bytes(rows).decode())
  assert [r['alpha'] for r in back] == [r['alpha'] for r in rows]
  assert all(np.isnan(r['fd']) for r in back)


def test_splitting_scheme_sweep_matches_its_sampler():
  """method=splitting: the stochastic scheme's O steps take each cell's operator per call;
  the vanilla row is exactly the config's splitting sampler, and the filter is applied."""
  from configs.analytic import gaussian_field_psld
  c = gaussian_field_psld.get_config()
  c.data.image_size = 4
  c.model.num_scales = 5
  c.sampling.method = 'splitting'
  c.sampling.integrator = 'oba'
  grid = sweep.Grid(alphas=[3.], num_samples=32)
  res = sweep.run_sweep(c, None, grid, keep_samples=True)
  assert [r['filter'] for r in res.rows] == ['vanilla', 'statistics']
  assert {r['predictor'] for r in res.rows} == {'splitting:oba'}
  sde, eps = sde_lib.get_sde(c)
  smp = sampling.get_sampler_from_config(c, sde, (32, 4, 4, 3), eps)
  model, states, params = mutils.init_model(jax.random.PRNGKey(0), c)
  score_fn = mutils.get_score_fn(sde, model, params, states, train=False, continuous=True)
  x, nfe = smp(jax.random.PRNGKey(int(c.sampling.seed)), score_fn)
  assert all(r['nfe'] == int(nfe) == 3 * 5 for r in res.rows)   # OBA: 3 evaluations per step
  (van,), (pds,) = ([v for (b, s), v in res.samples.items() if s.filter == f]
                    for f in ('vanilla', 'statistics'))
  np.testing.assert_allclose(van, np.asarray(x), rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(pds - van)) > 1e-2
  for integrator, words in (('cvv', 'stochastic splitting schemes'), ('nope', "'nope'")):
    c.sampling.integrator = integrator
    with pytest.raises(ValueError, match=words):
      sweep.run_sweep(c, None, grid)
  c.sampling.integrator = 'oba'
  with pytest.raises(ValueError, match='--samplers'):
    sweep.run_sweep(c, None, sweep.Grid(samplers=[('euler_maruyama', 'none')]))
  c.sampling.method = 'conjugate'
  with pytest.raises(ValueError, match="method='conjugate'"):
    sweep.run_sweep(c, None, grid)

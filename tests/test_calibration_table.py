"""scripts/calibration_oracle_table.py end to end on a tiny oracle (8x8x1, N = 10, 20)."""
import csv
import math
import os

import numpy as np
import pytest

from configs.analytic import gaussian_field
from score_sde_pds import calibration, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _script():
  """scripts/calibration_oracle_table.py as a module (its flags are defined only when it
  runs as a script)."""
  import importlib.util
  path = os.path.join(ROOT, 'scripts', 'calibration_oracle_table.py')
  spec = importlib.util.spec_from_file_location('calibration_oracle_table', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_oracle_table_script(tmp_path):
  """table -> sampled confirmation -> csv / md / png, on an 8x8x1 oracle, N = 10, 20."""
  script = _script()
  config = gaussian_field.get_config()
  config.data.image_size, config.data.num_channels = 8, 1
  rows, ops = script.table_rows(config, [10, 20], [('reverse_diffusion', 'none')], [1.0],
                                sweep_points=41, log=lambda *a: None)
  confirms = script.confirm_rows(config, [('reverse_diffusion', 'none', 10)], ops, 1024, 0,
                                 log=lambda *a: None)
  out = tmp_path / 'cal'
  script.write_outputs(str(out), rows, confirms, 'python scripts/calibration_oracle_table.py',
                       config)
  with pytest.raises(ValueError, match='--confirm'):
    script._parse(['reverse_diffusion:none'], 3, 'confirm')
  assert sorted(os.listdir(out)) == ['confirm.csv', 'oracle_table.csv', 'oracle_table.md',
                                     'oracle_table.png']
  assert (out / 'oracle_table.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  rows = _rows(out / 'oracle_table.csv')
  assert [(r['mode'], r['N']) for r in rows] == [('reference', '10'), ('marginal', '10'),
                                                 ('reference', '20'), ('marginal', '20')]
  assert all(len(r) == len(script.COLUMNS) and None not in r for r in rows)
  text = script.csv_text([{'a': 'log r (8 knots), L-BFGS-B', 'b': math.inf}], ['a', 'b'])
  assert list(csv.DictReader(text.splitlines())) == [{'a': 'log r (8 knots), L-BFGS-B',
                                                      'b': 'inf'}]
  assert rows[0]['calibration'] == 'per mode group (decoupled)'
  f = lambda r, k: float(r[k])
  for r in rows:
    # the sweep contains the identity and the auto alpha: its best is below both
    assert f(r, 'fd_best') <= min(f(r, 'fd_identity'), f(r, 'fd_auto')) * (1 + 1e-9)
    assert r['auto_le_vanilla'] == str(f(r, 'fd_auto') <= f(r, 'fd_vanilla'))
    assert f(r, 'auto_over_best') == pytest.approx(f(r, 'fd_auto') / f(r, 'fd_best'), rel=1e-5)
    if r['mode'] == 'marginal':   # M = I in the marginal mode with eta = 1 is vanilla
      assert f(r, 'fd_identity') == pytest.approx(f(r, 'fd_vanilla'), rel=1e-9)
  # the script's auto alpha is the API's on the oracle's statistics
  cfg = gaussian_field.get_config()
  cfg.data.image_size, cfg.data.num_channels = 8, 1
  cfg.model.num_scales, cfg.sampling.corrector = 20, 'none'
  stats = sweep.oracle_statistics(cfg)
  a = calibration.auto_alpha(stats['freq'], space_stats=stats['space'],
                             **calibration.config_kwargs(cfg))
  assert float(rows[2]['auto_alpha']) == pytest.approx(a, rel=1e-5)
  # sampling confirms the recursion where the FD is far above the estimator floor
  conf = {r['operator']: r for r in _rows(out / 'confirm.csv')}
  assert sorted(conf) == ['alpha5', 'auto', 'calibrated', 'vanilla']
  for r in conf.values():
    assert abs(f(r, 'logratio_mean')) < 0.05, r
    if f(r, 'fd_recursion') > 20 * f(r, 'fd_floor'):
      assert f(r, 'fd_sampled') == pytest.approx(f(r, 'fd_recursion'), rel=0.15), r
  assert f(conf['vanilla'], 'fd_recursion') == pytest.approx(f(rows[0], 'fd_vanilla'), rel=1e-6)
  md = (out / 'oracle_table.md').read_text()
  assert "alpha='auto' never worse than vanilla" in md and '| reverse_diffusion:none | 20 |' in md
  assert math.isfinite(f(rows[0], 'fd_calibrated'))

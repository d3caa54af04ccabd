"""scripts/reproduce_table1.py and reproduce_table2.py end to end on a tiny setting (the
analytic oracle: exact metric, no network), in-process through their run/write functions."""
import csv
import importlib.util
import math
import os

import numpy as np

from configs.analytic import gaussian_field
from score_sde_pds import sde_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _config():
  c = gaussian_field.get_config()
  c.data.image_size = 8
  c.model.num_scales = 40
  c.sampling.corrector = 'none'
  c.sampling.pds.enabled = True
  return c


def test_table1_writes_csv_md_png(tmp_path):
  t1 = _script('reproduce_table1')
  assert all(int(n / sde_lib.speed_up_for(n, t)) == t for n, t in ((1000, 66), (2000, 166), (200, 30)))
  config = _config()
  rows, result = t1.run(config, str(tmp_path), ['5', '40'], num_samples=64, bootstrap=0,
                        log=lambda s: None)
  paths = t1.write_outputs(rows, result, str(tmp_path), 'cmd')
  with open(paths['csv']) as f:
    recs = list(csv.DictReader(f))
  assert [(r['T'], r['variant']) for r in recs] == [('5', 'vanilla'), ('5', 'PDS'),
                                                     ('40', 'vanilla'), ('40', 'PDS')]
  vals = {(r['T'], r['variant']): float(r['value']) for r in recs}
  assert all(math.isfinite(v) and v > 0 for v in vals.values())
  # the same seeds: the columns differ only by the operator, which is applied
  assert all(vals[(T, 'PDS')] != vals[(T, 'vanilla')] for T in ('5', '40'))
  # T = 40 = num_scales runs the base eps; T = 5 the PDS eps * speed_up
  eps = {r['T']: float(r['eps']) for r in recs}
  assert np.isclose(eps['5'] / eps['40'], 8., rtol=1e-6)
  assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert '| 5 |' in open(paths['md']).read()


def test_table2_times_both_columns_and_extrapolates(tmp_path):
  t2 = _script('reproduce_table2')
  config = _config()
  config.sampling.speed_up = 20.
  rows = t2.run(config, str(tmp_path), batch_size=4, timed_steps=2, repeats=2, name='tiny',
                log=lambda s: None)
  van, pds = rows
  assert (van['variant'], van['T'], pds['variant'], pds['T']) == ('vanilla', 40, 'PDS', 2)
  # vanilla: 2 of its 40 steps timed, times 20; PDS: its whole T = 2 timed
  assert van['extrapolated'] and van['timed_steps'] == 2
  assert np.isclose(van['seconds'], van['seconds_per_step'] * 40)
  assert not pds['extrapolated'] and np.isclose(pds['seconds'], pds['seconds_per_step'] * 2)
  assert pds['statistics'] == 'synthetic'       # the oracle config names no statistics files
  assert van['nfe_timed'] == pds['nfe_timed'] == 2     # predictor only: one NFE per step
  paths = t2.write_outputs(rows, str(tmp_path), 'cmd')
  md = open(paths['md']).read()
  assert '| 40 |' in md and 'extrapolated' in md
  assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  with open(paths['csv']) as f:
    assert [r['variant'] for r in csv.DictReader(f)] == ['vanilla', 'PDS']

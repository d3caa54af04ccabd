"""scripts/calibration_network.py without a network: its variants (the proxy's alpha alone
and with the pilot check) and the resume of an interrupted run from its CSV."""
import math
import os

from configs.ve import mnist_ncsnpp_small

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
  import importlib.util
  path = os.path.join(ROOT, 'scripts', 'calibration_network.py')
  spec = importlib.util.spec_from_file_location('calibration_network', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_variants_compare_the_proxy_alone_with_the_pilot_check():
  mod = _script()
  out = dict(mod._variant_configs(mnist_ncsnpp_small.get_config(), [2., 3.]))
  assert list(out) == ['vanilla', 'alpha=2', 'alpha=3', 'auto (proxy)', 'auto', 'calibrated']
  assert out['auto (proxy)'].sampling.pds.alpha == out['auto'].sampling.pds.alpha == 'auto'
  assert out['auto (proxy)'].sampling.pds.pilot_samples == 0
  assert out['auto'].sampling.pds.pilot_samples > 0
  assert out['vanilla'].sampling.pds.alpha == 'inf'


def test_rows_round_trip_through_the_csv_so_a_rerun_resumes(tmp_path):
  mod = _script()
  rows = [{'N': 20, 'variant': 'auto (proxy)', 'alpha': 3.35, 'metric': 'mnist_fd',
           'value': 77.37, 'value_std': 8.13, 'confident_share': 0.8, 'proxy_fd': 0.13,
           'nfe': 40, 'seconds': 12.5, 'num_samples': 128, 'alpha_proxy': None,
           'pilot_chosen_by': None, 'pilot_seconds': 0.},
          {'N': 50, 'variant': 'auto', 'alpha': 2.86, 'metric': 'mnist_fd', 'value': 86.6,
           'value_std': 9.9, 'confident_share': 0.7, 'proxy_fd': 0.4, 'nfe': 100,
           'seconds': 30., 'num_samples': 128, 'alpha_proxy': 1.43,
           'pilot_chosen_by': 'pilot', 'pilot_seconds': 357.2},
          {'N': 50, 'variant': 'vanilla', 'alpha': math.inf, 'metric': 'mnist_fd',
           'value': 149., 'value_std': 7.7, 'confident_share': 0.6, 'proxy_fd': 2.8,
           'nfe': 100, 'seconds': 30., 'num_samples': 128, 'alpha_proxy': None,
           'pilot_chosen_by': None, 'pilot_seconds': 0.}]
  mod.write_outputs(rows, str(tmp_path))
  assert mod.read_rows(str(tmp_path / 'calibration_network.csv')) == rows
  assert mod.read_rows(str(tmp_path / 'missing.csv')) == []
  md = (tmp_path / 'calibration_network.md').read_text()
  assert '| auto | ' in md and '(alpha 2.86)' in md and '| auto (proxy) | ' in md

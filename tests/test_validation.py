"""Bad input gets one clear error naming the key, the value and what is allowed,
before any compute; a diverging round is not saved."""
import os

import numpy as np
import pytest

from configs.analytic import gaussian_field
from score_sde_pds import run_lib


def _cfg(**over):
  c = gaussian_field.get_config()
  c.data.image_size = 8
  c.model.num_scales = 10
  c.sampling.batch_size = 4
  c.sampling.num_samples = 4
  for k, v in over.items():
    node = c
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.mark.parametrize('key,value,pattern', [
    ('sampling.predictor', 'reverse', r"predictor='reverse'.*reverse_diffusion"),
    ('sampling.corrector', 'langevine', r"corrector='langevine'.*valid names.*langevin"),
    ('model.name', 'ncsnpp_xx', r"model.name='ncsnpp_xx'.*valid names.*ncsnpp"),
    ('data.dataset', 'IMAGENET', r"dataset='IMAGENET'.*CIFAR10"),
    ('training.sde', 'vesd', r"sde='vesd'.*vesde"),
    ('model.num_scales', 0, r'num_scales must be >= 1'),
    ('sampling.speed_up', 40.0, r'N=0.*>= 1'),
    ('sampling.snr', 0.0, r'snr must be > 0, got 0.0'),
    ('sampling.snr', -1.0, r'snr must be > 0'),
    ('sampling.n_steps_each', 0, r'n_steps_each must be >= 1'),
    ('sampling.method', 'sde', r"method='sde'.*'ode', 'pc', 'splitting'"),
    ('sampling.corrector_norm', 'mean', r"corrector_norm='mean'.*batch.*sample"),
    ('sampling.batch_size', 0, r'batch_size must be >= 1'),
    ('sampling.num_samples', 0, r'num_samples must be >= 1'),
    ('data.image_size', 0, r'image_size must be a positive integer'),
    ('sampling.pds.mode', 'exact', r"pds.mode='exact'.*reference"),
    ('sampling.pds.filter', 'gauss', r"filter='gauss'.*statistics.*parametric"),
])
def test_bad_values_are_named(key, value, pattern):
  overrides = {key: value}
  if key.startswith('sampling.pds.') and key != 'sampling.pds.mode':
    overrides['sampling.pds.enabled'] = True
  with pytest.raises(ValueError, match=pattern):
    run_lib.validate_config(_cfg(**overrides), workdir='/nonexistent')


def test_pds_alpha_and_parametric_values():
  with pytest.raises(ValueError, match=r'alpha must be > 1'):
    run_lib.validate_config(_cfg(**{'sampling.pds.enabled': True, 'sampling.pds.alpha': 1.0}))
  with pytest.raises(ValueError, match=r'lam must be > 0'):
    run_lib.validate_config(_cfg(**{'sampling.pds.enabled': True,
                                    'sampling.pds.filter': 'parametric',
                                    'sampling.pds.lam': 0.0}))
  with pytest.raises(ValueError, match=r'radius must be >= 0'):
    run_lib.validate_config(_cfg(**{'sampling.pds.enabled': True,
                                    'sampling.pds.filter': 'parametric',
                                    'sampling.pds.radius': -2.0}))


def test_statistics_file_of_wrong_shape_is_named(tmp_path):
  bad = tmp_path / 'pds_stats' / 'bad_freq.npy'
  bad.parent.mkdir()
  np.save(bad, np.ones((3, 16, 16), np.float32))     # the model makes 8x8 images
  with pytest.raises(ValueError, match=r'bad_freq\.npy.*\(3, 16, 16\)'):
    run_lib.validate_config(_cfg(**{'sampling.pds.enabled': True,
                                    'sampling.pds.freq_stats': 'pds_stats/bad_freq.npy'}),
                            workdir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r'pds.freq_stats.*missing_freq\.npy'):
    run_lib.validate_config(_cfg(**{'sampling.pds.enabled': True,
                                    'sampling.pds.freq_stats': 'pds_stats/missing_freq.npy'}),
                            workdir=str(tmp_path))


def test_diverging_round_is_not_saved(tmp_path):
  # annealed Langevin with a huge fixed step: x <- (1 - eps / lam) x overflows in a few steps
  cfg = _cfg(**{'sampling.corrector': 'ald', 'sampling.snr': 1e3, 'model.num_scales': 60})
  with pytest.raises(run_lib.SamplingDivergedError, match=r'round 0 .*step \d+ of 60'):
    run_lib.sample(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / 'samples' / 'samples_0.npz')


def test_paper_config_without_checkpoint_says_where_files_go(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  res = subprocess.run(
      [sys.executable, os.path.join(root, 'main.py'),
       f'--config={os.path.join(root, "configs", "ve", "ffhq_ncsnpp.py")}',
       f'--workdir={tmp_path}', '--mode=sample', '--compilation_cache='],
      capture_output=True, text=True, timeout=300)
  assert res.returncode == 1
  err = res.stderr
  assert 'Traceback' not in err
  assert 'checkpoints/checkpoint_<k>' in err and 'checkpoint.pth' in err
  assert os.path.join(str(tmp_path), 'pds_stats', 'ffhq_freq.npy') in err
  assert os.path.join(str(tmp_path), 'pds_stats', 'ffhq_space.npy') in err
  assert 'compute_pds_statistics.py' in err


def test_image_size_the_model_cannot_take():
  from configs.ve import cifar10_ncsnpp_continuous
  cfg = cifar10_ncsnpp_continuous.get_config()
  cfg.data.image_size = 36
  with pytest.raises(ValueError, match=r'image_size=36 .*ncsnpp.*ch_mult=\(1, 2, 2, 2\).*divisible'
                                       r'.* 8'):
    run_lib.validate_config(cfg)

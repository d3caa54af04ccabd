"""PDS statistics (reference reproduction, the script end to end) and datasets."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import default_configs
from score_sde_pds import datasets
from score_sde_pds import preconditioning as pre

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, 'tests', 'fixtures', 'pds')
SCRIPT = os.path.join(ROOT, 'scripts', 'compute_pds_statistics.py')


def _config(dataset='DIGITS', size=16, channels=1, **data):
  cfg = default_configs.get_default_configs()
  cfg.data.dataset = dataset
  cfg.data.image_size = size
  cfg.data.num_channels = channels
  for k, v in data.items():
    cfg.data[k] = v
  return cfg


def test_compute_statistics_reproduces_reference_files():
  with np.load(os.path.join(FIX, 'synthetic_images.npz')) as f:
    images = f['images_uint8'][f['visit_order']]      # (200, 32, 32, 3) HWC uint8
  stats = pre.compute_statistics(images)
  ref_freq = np.moveaxis(np.load(os.path.join(FIX, 'cifar10_freq.npy')), 0, -1)
  ref_space = np.moveaxis(np.load(os.path.join(FIX, 'cifar10_space.npy')), 0, -1)
  assert stats['freq'].shape == (32, 32, 3) and stats['freq'].dtype == np.float32
  assert stats['num_images'] == 200
  np.testing.assert_allclose(stats['space'], ref_space, rtol=1e-5)
  # The reference evaluates log(1 + P) in float32: where P ~ 1e-3 (the smallest R
  # is 1.1e-3) its result carries the rounding of 1 + P, up to one ulp of 1.0
  # (1.2e-7 absolute, ~1e-4 relative there). We accumulate in float64; atol covers
  # that one ulp, rtol 1e-5 holds everywhere else.
  np.testing.assert_allclose(stats['freq'], ref_freq, rtol=1e-5, atol=2.4e-7)
  # the same gains as the reference's masks
  with np.load(os.path.join(FIX, 'pds_vectors.npz')) as v:
    np.testing.assert_allclose(pre.statistics_to_gain(stats['freq']),
                               np.moveaxis(v['freq_mask_both'][0], 0, -1), rtol=1e-6)
    np.testing.assert_allclose(pre.statistics_to_gain(stats['space']),
                               np.moveaxis(v['space_mask_both'][0], 0, -1), rtol=1e-6)
  # float input in [0, 1] and an iterable of batches give the same result
  x = images.astype(np.float32) / np.float32(255)
  again = pre.compute_statistics(iter([x[:77], x[77:150], x[150:]]), batch_size=64)
  np.testing.assert_allclose(again['freq'], stats['freq'], rtol=1e-6)
  np.testing.assert_allclose(again['space'], stats['space'], rtol=1e-6)


def test_script_end_to_end_digits(tmp_path):
  cfg_file = tmp_path / 'digits_config.py'
  cfg_file.write_text(
      'from configs import default_configs\n\n\n'
      'def get_config():\n'
      '  config = default_configs.get_default_configs()\n'
      "  config.data.dataset = 'DIGITS'\n"
      '  config.data.image_size = 16\n'
      '  config.data.num_channels = 1\n'
      '  return config\n')
  out = tmp_path / 'stats'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, SCRIPT, f'--config={cfg_file}', f'--output_dir={out}',
       '--num_images=120', '--seed=1', '--alpha=4'],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  names = sorted(os.listdir(out))
  assert names == ['digits_freq.npy', 'digits_space.npy', 'digits_stats.npz',
                   'digits_stats.png']
  shape = (16, 16, 1)
  assert np.load(out / 'digits_freq.npy').shape == (1, 16, 16)   # reference (C, H, W)
  freq = pre.load_statistics(out / 'digits_freq.npy', shape)
  space = pre.load_statistics(out / 'digits_space.npy', shape)
  assert freq.shape == shape and space.shape == shape
  np.testing.assert_array_equal(pre.load_statistics(out / 'digits_stats.npz', shape,
                                                    kind='freq'), freq)
  np.testing.assert_array_equal(pre.load_statistics(out / 'digits_stats.npz', shape,
                                                    kind='space'), space)
  with np.load(out / 'digits_stats.npz') as f:
    assert int(f['num_images']) == 120 and int(f['seed']) == 1
    assert str(f['dataset']) == 'DIGITS'
  # the statistics are those of the 120 images drawn with seed 1
  src = datasets.get_dataset(_config(), 'train')
  idx = np.random.default_rng(1).permutation(len(src))[:120]
  want = pre.compute_statistics(src.get_batch(idx))
  np.testing.assert_allclose(freq, want['freq'], rtol=1e-6)
  np.testing.assert_allclose(space, want['space'], rtol=1e-6)
  assert freq[0, 0, 0] == freq.max()  # DC dominates, unshifted layout
  from PIL import Image
  with Image.open(out / 'digits_stats.png') as im:
    assert im.size[0] > 100 and im.size[1] > 100
  # the files drive a preconditioner through the config
  cfg = _config()
  cfg.sampling.pds.enabled = True
  cfg.sampling.pds.freq_stats = 'stats/digits_freq.npy'
  cfg.sampling.pds.space_stats = 'stats/digits_stats.npz'
  p = pre.Preconditioner.from_config(cfg, workdir=str(tmp_path))
  assert p.use_freq and p.use_space and p.freq_gain.shape == shape


def _load_script():
  spec = importlib.util.spec_from_file_location('compute_pds_statistics', SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_analytic_statistics_match_samples():
  analytic = pytest.importorskip('score_sde_pds.models.analytic')
  cfg_mod = pytest.importorskip('configs.analytic.gaussian_field')
  import jax
  cfg = cfg_mod.get_config()
  script = _load_script()
  stats = script.analytic_statistics(cfg)
  field = analytic.GaussianField.from_config(cfg)
  x = np.asarray(field.sample(jax.random.PRNGKey(0), 4000))
  emp = pre.compute_statistics(x)
  assert stats['freq'].shape == emp['freq'].shape == field.shape
  # 4000 samples: E|F x|^2 within a few percent -> R = log(1 + P) within 0.05
  assert np.abs(stats['freq'] - emp['freq']).max() < 0.05
  # per-pixel E[x^2] estimates have ~1.3% relative std at n = 4000 (768 pixels)
  np.testing.assert_allclose(stats['space'], emp['space'], rtol=0.07)
  np.testing.assert_allclose(stats['space'].mean(), emp['space'].mean(), rtol=0.01)
  # centred data: the moments are mapped back to [0, 1] pixels
  cfg.data.centered = True
  centred = script.analytic_statistics(cfg)
  emp01 = pre.compute_statistics((x + 1) / 2)
  assert np.abs(centred['freq'] - emp01['freq']).max() < 0.05
  np.testing.assert_allclose(centred['space'], emp01['space'], rtol=0.07)
  np.testing.assert_allclose(centred['space'].mean(), emp01['space'].mean(), rtol=0.01)


# ---------------------------------------------------------------- datasets


def test_small_datasets():
  src = datasets.get_dataset(_config('DIGITS', 16, 1), 'train')
  test = datasets.get_dataset(_config('DIGITS', 16, 1), 'test')
  assert len(src) + len(test) == 1797 and len(test) == 180
  x = src.get_batch(range(5))
  assert x.shape == (5, 16, 16, 1) and x.dtype == np.float32
  assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.5
  m = datasets.get_dataset(_config('MNIST', 32, 3, resize_mode='pad'), 'train')
  assert len(m) == 4500
  y = m.sample(4, seed=0)
  assert y.shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(y[..., 0], y[..., 2])          # replicated grey
  assert np.all(y[:, :2] == 0) and np.all(y[:, :, -2:] == 0)   # 2-pixel zero padding
  batches = m.batches(8, seed=0, random_flip=True)
  b = next(batches)
  assert b.shape == (8, 32, 32, 3) and b.dtype == np.float32


def test_image_folder_and_scalers(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for i in range(3):
    arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / f'img{i}.png')
  cfg = _config('IMAGE_FOLDER', 8, 3, path=str(tmp_path))
  src = datasets.get_dataset(cfg)
  assert len(src) == 3 and src[0].shape == (8, 8, 3)
  assert 0 <= src[0].min() and src[0].max() <= 1
  cfg.data.centered = True
  scaler = datasets.get_data_scaler(cfg)
  inverse = datasets.get_data_inverse_scaler(cfg)
  np.testing.assert_allclose(scaler(np.array([0., 0.5, 1.])), [-1., 0., 1.])
  np.testing.assert_allclose(inverse(scaler(src[1])), src[1], atol=1e-6)
  cfg.data.centered = False
  assert datasets.get_data_scaler(cfg)(0.25) == 0.25


def test_dataset_errors():
  with pytest.raises(ValueError, match=r"dataset='NOPE'.*valid datasets: MNIST, DIGITS"):
    datasets.get_dataset(_config('NOPE'))
  with pytest.raises(ValueError, match=r'needs config\.data\.path'):
    datasets.get_dataset(_config('FFHQ', 64, 3))
  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError:
    with pytest.raises(ImportError, match=r'tensorflow_datasets.*not installed'):
      datasets.get_dataset(_config('CIFAR10', 32, 3))
  with pytest.raises(ValueError, match=r'needs config\.data\.category'):
    datasets.get_dataset(_config('LSUN', 256, 3))
  assert datasets.check_dataset_name(_config('cifar10', 32, 3)) == 'CIFAR10'

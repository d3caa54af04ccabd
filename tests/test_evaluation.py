"""The shipped digit classifier, MNIST metrics and --mode eval on sample folders."""
import json
import os

import numpy as np
import pytest

from configs.ve import mnist_ncsnpp_small
from score_sde_pds import datasets, run_lib, utils
from score_sde_pds.evaluation import digit_classifier as dc
from score_sde_pds.evaluation import evaluator, metrics

CLF = os.path.join(utils.REPO_ROOT, 'assets', 'classifiers', 'mnist_classifier.npz')


@pytest.fixture(scope='module')
def mnist():
  config = mnist_ncsnpp_small.get_config()
  ext = evaluator.get_extractor(config)
  ref, _ = evaluator.load_reference(config, None, ext)
  x_te, y_te = datasets.labeled_digits('MNIST', 'test')
  return config, ext, ref, x_te, y_te


def test_shipped_classifier_reaches_its_reported_accuracy(mnist):
  _, ext, _, x_te, y_te = mnist
  params, meta = dc.load_classifier(CLF)
  assert meta['dataset'] == 'MNIST' and meta['num_test'] == len(y_te)
  out = ext.fn(evaluator.quantise(x_te))
  acc = float(np.mean(out['logits'].argmax(1) == y_te))
  assert abs(acc - meta['test_accuracy']) <= 1. / len(y_te) + 1e-9
  assert acc > 0.95
  assert out['features'].shape == (len(y_te), dc.FEATURE_DIM)


def test_noise_scores_far_worse_than_real_digits(mnist):
  config, ext, ref, x_te, _ = mnist
  real = evaluator.score_outputs(evaluator.extract(ext, x_te), ext, ref, config)
  noise_imgs = np.random.default_rng(0).uniform(size=x_te.shape).astype(np.float32)
  noise = evaluator.score_outputs(evaluator.extract(ext, noise_imgs), ext, ref, config)
  assert real['metric'] == 'mnist_fd'
  assert noise['mnist_fd'] > 20 * real['mnist_fd']
  assert real['confident_share'] > 0.9 and real['class_tv'] < 0.1
  assert noise['class_tv'] > 0.3       # noise collapses onto few classes
  # the reference statistics were made with the shipped weights, and checked
  assert ref['meta']['weights_hash'] == ext.weights_hash


def _write_rounds(folder, images, per_round):
  os.makedirs(folder, exist_ok=True)
  for r in range(0, len(images) // per_round):
    x = images[r * per_round:(r + 1) * per_round]
    utils.atomic_save_npz(os.path.join(folder, f'samples_{r}.npz'), samples=utils.to_uint8(x),
                          samples_float=x)


def test_eval_mode_resumes_to_the_same_result(mnist, tmp_path, monkeypatch):
  config, _, _, x_te, _ = mnist
  for w in ('a', 'b'):
    _write_rounds(str(tmp_path / w / 'samples'), x_te[:300], 100)
  full = run_lib.evaluate(config, str(tmp_path / 'a'))
  assert full['rounds'] == 3 and full['num_samples'] == 300 and full['rounds_from_cache'] == 0

  calls = {'n': 0}
  real_extract = evaluator.extract

  def dying_extract(ext, images):
    calls['n'] += 1
    if calls['n'] == 2:
      raise KeyboardInterrupt('killed')
    return real_extract(ext, images)

  monkeypatch.setattr(evaluator, 'extract', dying_extract)
  with pytest.raises(KeyboardInterrupt):
    run_lib.evaluate(config, str(tmp_path / 'b'))
  assert not os.path.exists(tmp_path / 'b' / 'samples' / 'eval.json')
  monkeypatch.setattr(evaluator, 'extract', real_extract)
  resumed = run_lib.evaluate(config, str(tmp_path / 'b'))
  assert resumed['rounds_from_cache'] == 1
  with open(tmp_path / 'a' / 'samples' / 'eval.json') as f:
    a = json.load(f)
  with open(tmp_path / 'b' / 'samples' / 'eval.json') as f:
    b = json.load(f)
  for d in (a, b):
    d.pop('folder'), d.pop('rounds_from_cache')
  assert a == b
  # a changed round is recomputed, not served from a stale cache
  x = np.load(tmp_path / 'b' / 'samples' / 'samples_0.npz')['samples_float'][::-1]
  utils.atomic_save_npz(str(tmp_path / 'b' / 'samples' / 'samples_0.npz'),
                        samples=utils.to_uint8(x), samples_float=x)
  again = run_lib.evaluate(config, str(tmp_path / 'b'))
  assert again['rounds_from_cache'] == 2


def test_eval_errors_name_what_is_missing(tmp_path):
  config = mnist_ncsnpp_small.get_config()
  with pytest.raises(FileNotFoundError, match='run --mode sample first'):
    run_lib.evaluate(config, str(tmp_path))
  _write_rounds(str(tmp_path / 'samples'), np.zeros((10, 28, 28, 1), np.float32), 10)
  config.eval.classifier_path = 'nowhere.npz'
  with pytest.raises(FileNotFoundError, match='config.eval.classifier_path'):
    run_lib.evaluate(config, str(tmp_path))
  from configs.ve import cifar10_ncsnpp_continuous
  cfg = cifar10_ncsnpp_continuous.get_config()
  _write_rounds(str(tmp_path / 'c' / 'samples'), np.zeros((10, 32, 32, 3), np.float32), 10)
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth'):
    run_lib.evaluate(cfg, str(tmp_path / 'c'))

"""The bundled MNIST models: their shipped weights (VE, PSLD and NCSNv2) load into the configs'
models exactly, and the README's first command (PDS at T = 20 on the VE model, nothing
else given) draws digits that the shipped classifier recognises."""
import os

import jax
import numpy as np
import pytest

from configs.psld import mnist_ncsnpp_small as psld_mnist
from configs.ve import mnist_ncsnpp_small
from configs.ve.ncsnv2 import mnist_small as ncsnv2_mnist
from score_sde_pds import checkpoints, run_lib, utils
from score_sde_pds.evaluation import evaluator


@pytest.mark.parametrize('module', [mnist_ncsnpp_small, psld_mnist, ncsnv2_mnist],
                         ids=['ve', 'psld', 'ncsnv2'])
def test_shipped_weights_match_the_config_model_exactly(module):
  config = module.get_config()
  path = os.path.join(utils.REPO_ROOT, config.model.default_checkpoint)
  assert os.path.isfile(path), path
  expected = checkpoints._as_flat_shapes(checkpoints.model_param_shapes(config))
  params = checkpoints.restore_official(path, config, which=config.model.weights)
  got = {k: tuple(np.shape(v)) for k, v in checkpoints._flatten(params)}
  assert set(got) == set(expected), (sorted(set(got) ^ set(expected)))[:10]
  assert all(got[k] == tuple(expected[k]) for k in expected)
  leaves = jax.tree_util.tree_leaves(params)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_first_command_draws_recognisable_digits(tmp_path):
  """`main.py --mode sample` on the bundled default, in an empty workdir, from another cwd."""
  config = mnist_ncsnpp_small.get_config()
  assert config.sampling.pds.enabled and int(config.model.num_scales / config.sampling.speed_up) <= 30
  cwd = os.getcwd()
  os.chdir(tmp_path)       # the shipped files are found from the repository root
  try:
    folder = run_lib.sample(config, str(tmp_path / 'demo'))
  finally:
    os.chdir(cwd)
  x = run_lib.load_samples(folder)
  assert x.shape == (64, 28, 28, 1)
  assert os.path.isfile(os.path.join(folder, 'samples_0.png'))
  ext = evaluator.get_extractor(config)
  res = evaluator.score_outputs(evaluator.extract(ext, x), ext, None, config)
  # a clear majority confidently classified, and not one class repeated
  assert res['confident_share'] > 0.6, res
  assert sum(h > 0 for h in res['class_histogram']) >= 7, res


def test_weights_key_selects_the_stored_weights(tmp_path):
  """config.model.weights: the PSLD file holds raw weights; asking for EMA ones, or for an
  unknown kind, fails naming what was asked for."""
  config = psld_mnist.get_config()
  assert config.model.weights == 'model'
  with config.unlocked():
    config.model.weights = 'ema'
  with pytest.raises(checkpoints.CheckpointError, match="holds the 'model' weights"):
    run_lib.load_model(config, str(tmp_path))
  config.model.weights = 'emma'
  with pytest.raises(ValueError, match='config.model.weights'):
    run_lib.load_model(config, str(tmp_path))

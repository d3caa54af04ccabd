"""The bundled MNIST model: its shipped weights load into the config's model exactly, and
the README's first command (PDS at T = 20 on them, nothing else given) draws digits that
the shipped classifier recognises."""
import os

import jax
import numpy as np

from configs.ve import mnist_ncsnpp_small
from score_sde_pds import checkpoints, run_lib, utils
from score_sde_pds.evaluation import evaluator


def test_shipped_weights_match_the_config_model_exactly():
  config = mnist_ncsnpp_small.get_config()
  path = os.path.join(utils.REPO_ROOT, config.model.default_checkpoint)
  assert os.path.isfile(path), path
  expected = checkpoints._as_flat_shapes(checkpoints.model_param_shapes(config))
  params = checkpoints.restore_official(path, config)
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

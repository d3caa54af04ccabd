"""LSUN (256 px) defaults of score_sde (its `configs/default_lsun_configs.py`).

Starts from `configs.default_configs.get_default_configs()` and changes only the values
score_sde uses differently for LSUN (VE sigma_max 378, 2000 noise scales, snr 0.075,
batch size 64, no dropout). The category (bedroom / church_outdoor) is set by the model
configs.
"""
from configs import default_configs


def get_default_configs():
  config = default_configs.get_default_configs()
  training = config.training
  training.batch_size = 64
  training.n_iters = 2400001
  training.snapshot_freq_for_preemption = 5000

  config.sampling.snr = 0.075

  evaluate = config.eval
  evaluate.begin_ckpt = 50
  evaluate.end_ckpt = 96
  evaluate.batch_size = 512
  evaluate.num_samples = 50000

  config.data.dataset = 'LSUN'
  config.data.image_size = 256

  model = config.model
  model.sigma_max = 378.
  model.num_scales = 2000
  model.dropout = 0.
  return config

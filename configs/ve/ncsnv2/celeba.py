"""NCSNv2 on CelebA (64 px), as score_sde's configs/ve/ncsnv2/celeba.py.

500 noise levels from sigma_max = 90 to sigma_min = 0.01, annealed Langevin dynamics
with 5 steps per level (snr 0.128).
"""
from configs.ve.ncsnv2 import default_ncsnv2


def get_config():
  config = default_ncsnv2.set_ncsnv2(default_ncsnv2.get_dataset_defaults('celeba'))
  sampling = config.sampling
  sampling.n_steps_each = 5
  sampling.snr = 0.128

  model = config.model
  model.name = 'ncsnv2_64'
  model.num_scales = 500
  model.sigma_max = 90.
  model.sigma_min = 0.01
  model.ema_rate = 0.999
  return config

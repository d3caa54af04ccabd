"""NCSNv2 on CIFAR-10 (32 px), as score_sde's configs/ve/ncsnv2/cifar10.py.

232 noise levels from sigma_max = 50 to sigma_min = 0.01, annealed Langevin dynamics
with 5 steps per level (snr 0.176).
"""
from configs.ve.ncsnv2 import default_ncsnv2


def get_config():
  config = default_ncsnv2.set_ncsnv2(default_ncsnv2.get_dataset_defaults('cifar10'))
  sampling = config.sampling
  sampling.n_steps_each = 5
  sampling.snr = 0.176

  model = config.model
  model.name = 'ncsnv2_64'
  model.num_scales = 232
  model.sigma_max = 50.
  model.sigma_min = 0.01
  model.ema_rate = 0.999
  return config

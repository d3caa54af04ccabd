"""NCSNv2 on LSUN bedroom (128 px), as score_sde's configs/ve/ncsnv2/bedroom.py.

1086 noise levels from sigma_max = 190 to sigma_min = 0.01, annealed Langevin
dynamics with 3 steps per level (snr 0.095).

score_sde's file spells the flag `training.continuouse = False`, so there training
stays continuous by accident; here `training.continuous = False` as for the other
NCSNv2 configs (the network takes integer noise-level labels).
"""
from configs.ve.ncsnv2 import default_ncsnv2


def get_config():
  config = default_ncsnv2.set_ncsnv2(default_ncsnv2.get_dataset_defaults('lsun'))
  config.training.batch_size = 128

  sampling = config.sampling
  sampling.n_steps_each = 3
  sampling.snr = 0.095

  data = config.data
  data.category = 'bedroom'
  data.image_size = 128

  model = config.model
  model.name = 'ncsnv2_128'
  model.num_scales = 1086
  model.sigma_max = 190.
  model.sigma_min = 0.01
  model.ema_rate = 0.9999
  return config

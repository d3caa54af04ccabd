"""NCSN++ (continuous, VE SDE) on LSUN church_outdoor 256 px: score_sde's
configs/ve/church_ncsnpp_continuous.py.

The same network as the bedroom model (configs/ve/bedroom_ncsnpp_continuous.py:
ch_mult (1, 1, 2, 2, 2, 2, 2), 2 res blocks per resolution, BigGAN blocks with FIR
resampling, output_skip / input_skip pyramids; 65,574,549 parameters); only the
category and sigma_max differ.
"""
from configs.ve import bedroom_ncsnpp_continuous


def get_config():
  config = bedroom_ncsnpp_continuous.get_config()
  config.data.category = 'church_outdoor'
  config.model.sigma_max = 380.
  return config

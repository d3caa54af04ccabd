"""PDS on CIFAR-10 with the official deep NCSN++ (VE) model: the PDS paper's CIFAR-10 setting.

Reproduces the paper's Table 1 PDS runs (PC sampler, reverse-diffusion predictor +
Langevin corrector, frequency filter, alpha = 5): speed_up 10, i.e.
N = int(1000 / 10) = 100 iterations, statistics read from `pds_stats/cifar10_freq.npy`
relative to the workdir. Base model and values:
`configs/ve/cifar10_ncsnpp_deep_continuous.py` (score_sde).
"""
from configs.ve import cifar10_ncsnpp_deep_continuous


def get_config():
  config = cifar10_ncsnpp_deep_continuous.get_config()

  sampling = config.sampling
  # T = 100 iterations; for the paper's T = 200 run pass --config.sampling.speed_up=5.
  sampling.speed_up = 10.          # N = int(num_scales / speed_up) = 100; eps = 1e-5 * 10

  pds = sampling.pds
  pds.enabled = True
  pds.filter = 'statistics'
  pds.freq_stats = 'pds_stats/cifar10_freq.npy'
  pds.space_stats = ''             # frequency filter only
  pds.alpha = 5.
  return config

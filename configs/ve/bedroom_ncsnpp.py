"""PDS on LSUN bedroom 256 px with the official NCSN++ (VE) model: the PDS paper's
LSUN bedroom setting.

Reproduces the paper's LSUN experiment (PC sampler, reverse-diffusion predictor +
Langevin corrector): speed_up 12, i.e. N = int(2000 / 12) = 166 iterations, with the
frequency filter only (alpha = 5), statistics read from `pds_stats/bedroom_freq.npy`
relative to the workdir. Base model and values: `configs/ve/bedroom_ncsnpp_continuous.py`
(score_sde).
"""
from configs.ve import bedroom_ncsnpp_continuous


def get_config():
  config = bedroom_ncsnpp_continuous.get_config()

  sampling = config.sampling
  sampling.speed_up = 12.          # N = int(num_scales / speed_up) = 166; eps = 1e-5 * 12
  sampling.batch_size = 8          # the paper's timing batch (Table 2)

  pds = sampling.pds
  pds.enabled = True
  pds.filter = 'statistics'
  pds.freq_stats = 'pds_stats/bedroom_freq.npy'
  pds.space_stats = ''             # no space filter for LSUN
  pds.alpha = 5.
  return config

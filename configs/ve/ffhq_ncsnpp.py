"""PDS on FFHQ 1024 px with the official NCSN++ (VE) model: the PDS paper's FFHQ setting.

Reproduces the paper's FFHQ experiment (PC sampler, reverse-diffusion predictor +
Langevin corrector): speed_up 30, i.e. N = int(2000 / 30) = 66 iterations, with both
the frequency and the space filter (alpha = 5). Statistics are read from
`pds_stats/ffhq_{freq,space}.npy` relative to the workdir. Base model and values:
`configs/ve/ffhq_ncsnpp_continuous.py` (score_sde).
"""
from configs.ve import ffhq_ncsnpp_continuous


def get_config():
  config = ffhq_ncsnpp_continuous.get_config()

  sampling = config.sampling
  sampling.speed_up = 30.          # N = int(num_scales / speed_up) = 66; eps = 1e-5 * 30
  sampling.batch_size = 8          # the paper's timing batch (Table 2)

  pds = sampling.pds
  pds.enabled = True
  pds.filter = 'statistics'
  pds.freq_stats = 'pds_stats/ffhq_freq.npy'
  pds.space_stats = 'pds_stats/ffhq_space.npy'
  pds.alpha = 5.
  return config

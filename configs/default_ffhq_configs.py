"""FFHQ (1024 px) defaults: the dataset-level values of score_sde's
`configs/ve/ffhq_ncsnpp_continuous.py` (score_sde has no separate FFHQ defaults file).

Starts from `configs.default_configs.get_default_configs()` and changes only VE
sigma_max 1348, 2000 noise scales, snr 0.15, batch size 8, mean-reduced loss and EMA
0.9999 (plus evaluation settings).
"""
from configs import default_configs


def get_default_configs():
  config = default_configs.get_default_configs()
  training = config.training
  training.batch_size = 8
  training.n_iters = 2400001
  training.snapshot_freq_for_preemption = 5000
  training.reduce_mean = True

  config.sampling.snr = 0.15

  evaluate = config.eval
  evaluate.end_ckpt = 96
  evaluate.batch_size = 1024
  evaluate.num_samples = 50000

  data = config.data
  data.dataset = 'FFHQ'
  data.image_size = 1024
  data.tfrecords_path = ''   # score_sde reads FFHQ from TFRecords; here: data.path (image folder)

  model = config.model
  model.sigma_max = 1348.
  model.num_scales = 2000
  model.dropout = 0.
  model.ema_rate = 0.9999
  return config

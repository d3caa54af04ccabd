"""FFHQ (1024 px) defaults: the dataset-level values of score_sde's
`configs/ve/ffhq_ncsnpp_continuous.py` (score_sde has no separate FFHQ defaults file).

Starts from `configs.default_configs.get_default_configs()` and sets VE sigma_max 1348,
2000 noise scales, snr 0.15, batch size 8, mean-reduced loss and EMA 0.9999.
"""
from configs import default_configs


def get_default_configs():
  config = default_configs.get_default_configs()

  training = config.training
  training.batch_size = 8
  training.n_iters = 2400001
  training.snapshot_freq = 50000
  training.log_freq = 50
  training.eval_freq = 100
  training.snapshot_freq_for_preemption = 5000
  training.snapshot_sampling = True
  training.likelihood_weighting = False
  training.continuous = True
  training.reduce_mean = True

  sampling = config.sampling
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.snr = 0.15

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 96
  evaluate.batch_size = 1024
  evaluate.num_samples = 50000

  data = config.data
  data.dataset = 'FFHQ'
  data.image_size = 1024
  data.random_flip = True
  data.centered = False
  data.uniform_dequantization = False
  data.num_channels = 3
  # score_sde reads FFHQ from a tfrecords file (ffhq-r10.tfrecords); give its path here.
  data.tfrecords_path = ''

  model = config.model
  model.sigma_max = 1348.
  model.sigma_min = 0.01
  model.num_scales = 2000
  model.dropout = 0.
  model.embedding_type = 'fourier'
  model.ema_rate = 0.9999

  optim = config.optim
  optim.weight_decay = 0.
  optim.optimizer = 'Adam'
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 5000
  optim.grad_clip = 1.

  config.seed = 42
  return config

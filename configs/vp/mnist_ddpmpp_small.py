"""A small DDPM++ (continuous VP SDE) on MNIST: the VP twin of ve/mnist_ncsnpp_small.py.

Same U-Net (nf 32, ch_mult (1, 2, 2), one res block, attention in the 7x7 middle) with
DDPM++ conventions: centered data in [-1, 1], positional (999 t) embedding, no division
by sigma, per-pixel mean loss, Euler-Maruyama sampling.

  python main.py --config configs/vp/mnist_ddpmpp_small.py --workdir W --mode train
"""
from configs.ve import mnist_ncsnpp_small


def get_config():
  config = mnist_ncsnpp_small.get_config()

  training = config.training
  training.sde = 'vpsde'
  training.continuous = True
  training.reduce_mean = True

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'euler_maruyama'
  sampling.corrector = 'none'

  config.data.centered = True

  model = config.model
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.
  model.scale_by_sigma = False
  model.embedding_type = 'positional'
  return config

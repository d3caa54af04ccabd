"""Deep NCSN++ (continuous, VE SDE) on CIFAR-10: score_sde's
configs/ve/cifar10_ncsnpp_deep_continuous.py.

As cifar10_ncsnpp_continuous with 8 res blocks per resolution and 950k training
iterations; 107,587,075 parameters. The PDS paper's CIFAR-10 model.
"""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()

  training = config.training
  training.sde = 'vesde'
  training.continuous = True
  training.n_iters = 950001

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  model = config.model
  model.name = 'ncsnpp'
  model.fourier_scale = 16
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 8
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = [1, 3, 3, 1]
  model.skip_rescale = True
  model.resblock_type = 'biggan'
  model.progressive = 'none'
  model.progressive_input = 'residual'
  model.progressive_combine = 'sum'
  model.attention_type = 'ddpm'
  model.init_scale = 0.
  model.conv_size = 3
  return config

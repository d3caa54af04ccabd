"""NCSN++ (continuous, VE SDE) on FFHQ 1024 px: score_sde's configs/ve/ffhq_ncsnpp_continuous.py.

nf 16, ch_mult (1, 2, 4, 8, 16, 32, 32, 32), one res block per resolution, BigGAN
blocks with FIR resampling, output_skip / input_skip pyramids; 105,785,896 parameters.
"""
from configs import default_ffhq_configs


def get_config():
  config = default_ffhq_configs.get_default_configs()

  training = config.training
  training.sde = 'vesde'
  training.continuous = True

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  model = config.model
  model.name = 'ncsnpp'
  model.scale_by_sigma = True
  model.sigma_max = 1348.
  model.num_scales = 2000
  model.ema_rate = 0.9999
  model.sigma_min = 0.01
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 16
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.num_res_blocks = 1
  model.attn_resolutions = (16,)
  model.dropout = 0.
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = [1, 3, 3, 1]
  model.skip_rescale = True
  model.resblock_type = 'biggan'
  model.progressive = 'output_skip'
  model.progressive_input = 'input_skip'
  model.progressive_combine = 'sum'
  model.attention_type = 'ddpm'
  model.init_scale = 0.
  model.fourier_scale = 16
  model.conv_size = 3
  model.embedding_type = 'fourier'
  return config

"""The Gaussian random-field oracle under the VP SDE (DDPM++ settings) in centered model
space (mean 0, pixel std 0.5). Default sampler: conjugate B = 0 (DDIM) with 100 steps."""
from configs.analytic import gaussian_field


def get_config():
  config = gaussian_field.get_config()
  config.training.sde = 'vpsde'
  config.data.centered = True
  model = config.model
  model.num_scales = 100
  model.field_mean = 0.0
  model.field_std = 0.5
  model.scale_by_sigma = False
  sampling = config.sampling
  sampling.method = 'conjugate'
  sampling.integrator = 'euler'
  sampling.noise_removal = False
  return config

"""The Gaussian random-field oracle under PSLD (Pandey & Mandt 2023; CIFAR-10 SDE settings).

Same field as gaussian_field.py in centered model space (mean 0, pixel std 0.5, as data in
[-1, 1]); the sampler state is [x; m] (16x16x6). Default sampler: the conjugate-splitting
hybrid (config.sampling.method='splitting', integrator='cvv') with 100 steps.
"""
from configs.analytic import gaussian_field


def get_config():
  config = gaussian_field.get_config()
  config.training.sde = 'psld'
  config.data.centered = True
  model = config.model
  model.num_scales = 100
  model.field_mean = 0.0
  model.field_std = 0.5
  model.scale_by_sigma = False
  sampling = config.sampling
  sampling.method = 'splitting'
  sampling.integrator = 'cvv'
  sampling.noise_removal = False
  return config

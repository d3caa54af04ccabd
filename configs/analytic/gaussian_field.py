"""The bundled default: an exact Gaussian random-field oracle (no checkpoint needed).

Data are 16x16x3 images of a stationary Gaussian field with power spectrum
s(k) ~ (|k|^2 + k0^2)^(-beta/2) (see score_sde_pds/models/analytic.py), mean 0.5 and
pixel std 0.25 in [0, 1] data space, perturbed by the VE SDE of the CIFAR-10 models.
Its score is exact at every t, so sampler errors are measurable exactly
(`scripts/sweep.py` reports the exact Frechet distance to the target).
"""
from configs import default_configs


def get_config():
  config = default_configs.get_default_configs()
  config.training.sde = 'vesde'
  config.training.continuous = True

  data = config.data
  data.dataset = 'GAUSSIAN_FIELD'
  data.image_size = 16
  data.num_channels = 3
  data.centered = False
  data.random_flip = False

  model = config.model
  model.name = 'analytic_gaussian'
  model.sigma_min = 0.01
  model.sigma_max = 50.
  model.num_scales = 200
  model.field_beta = 3.0     # spectral slope: larger = smoother, more ill-conditioned
  model.field_k0 = 1.0       # low-frequency cut-off (cycles per image)
  model.field_mean = 0.5
  model.field_std = 0.25     # pixel std (a float or one per channel)

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.snr = 0.16
  sampling.batch_size = 64
  sampling.num_samples = 256
  return config

"""Model presets of the speed benchmarks (no JAX or PyTorch import: shared by both)."""

# The tiny NCSN++ of tests/fixtures/score_sde_jax/tiny_ncsnpp_config.json (model part).
TINY_MODEL = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                  resamp_with_conv=True, conditional=True, fir=True, fir_kernel=(1, 3, 3, 1),
                  skip_rescale=True, resblock_type='biggan', progressive='output_skip',
                  progressive_input='input_skip', progressive_combine='sum',
                  embedding_type='fourier', fourier_scale=16, init_scale=0., conv_size=3,
                  scale_by_sigma=True, sigma_min=0.01, sigma_max=50.)


def apply_preset(config, preset):
  """Turns `config` into the tiny fixture model ('tiny') in place (VE, 32x32x3)."""
  if preset != 'tiny':
    return config
  with config.unlocked():
    for k, v in TINY_MODEL.items():
      with config.model.ignore_type():
        config.model[k] = v
    config.data.image_size, config.data.num_channels, config.data.centered = 32, 3, False
    config.training.sde, config.training.continuous = 'vesde', True
    config.model.name = 'ncsnpp'
  return config


def random_statistics(shape, seed):
  """(freq, space) random positive PDS statistics of shape (H, W, C), float32: the
  benchmark's stand-in for dataset statistics (the values do not change the work)."""
  import numpy as np
  g = np.random.default_rng(seed)
  freq = g.uniform(1., 10., shape).astype(np.float32)     # like log(1 + E|F x|^2)
  space = g.uniform(0.05, 1., shape).astype(np.float32)   # like E[x^2] in [0, 1]
  return freq, space

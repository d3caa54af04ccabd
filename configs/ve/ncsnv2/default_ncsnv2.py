"""Shared settings of the NCSNv2 configs (score_sde's `configs/ve/ncsnv2/*.py`).

`get_dataset_defaults(name)` gives score_sde's dataset defaults: the project's
`configs/default_{cifar10,lsun}_configs.py`, and score_sde's CelebA values applied on
top of `configs.default_configs.get_default_configs()`, so every common key exists.
`set_ncsnv2(config)` then sets what the three official NCSNv2 configs share: discrete
VE training, annealed Langevin dynamics sampling (no predictor, 'ald' corrector), the
RefineNet hyper-parameters and the NCSNv2 optimiser.
"""
from configs import default_cifar10_configs, default_configs, default_lsun_configs


def _celeba(config):
  """score_sde's CelebA (64 px) defaults."""
  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024
  evaluate.enable_sampling = True
  evaluate.num_samples = 50000
  evaluate.enable_loss = True
  evaluate.enable_bpd = False
  evaluate.bpd_dataset = 'test'

  data = config.data
  data.dataset = 'CELEBA'
  data.image_size = 64
  data.random_flip = True
  data.centered = False
  data.uniform_dequantization = False
  data.num_channels = 3

  config.model.sigma_min = 0.01
  config.model.sigma_max = 90.
  config.model.num_scales = 1000
  config.model.dropout = 0.1
  config.sampling.snr = 0.17
  return config


_DATASETS = {
    'cifar10': default_cifar10_configs.get_default_configs,
    'celeba': lambda: _celeba(default_configs.get_default_configs()),
    'lsun': default_lsun_configs.get_default_configs,
}


def get_dataset_defaults(name):
  """Common defaults with score_sde's dataset defaults for `name` (cifar10|celeba|lsun)."""
  if name not in _DATASETS:
    raise ValueError(f'unknown NCSNv2 dataset defaults {name!r}; valid: {sorted(_DATASETS)}.')
  return _DATASETS[name]()


def set_ncsnv2(config):
  """Settings shared by score_sde's NCSNv2 configs (modifies and returns `config`)."""
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'none'
  sampling.corrector = 'ald'

  model = config.model
  model.scale_by_sigma = True
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'
  model.nf = 128
  model.interpolation = 'bilinear'

  optim = config.optim
  optim.weight_decay = 0.
  optim.optimizer = 'Adam'
  optim.lr = 1e-4
  optim.beta1 = 0.9
  optim.amsgrad = False
  optim.eps = 1e-8
  optim.warmup = 0
  optim.grad_clip = -1.
  return config

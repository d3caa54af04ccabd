"""CIFAR-10 (32 px) defaults of score_sde (its `configs/default_cifar10_configs.py`).

`configs/default_configs.py` already holds score_sde's CIFAR-10 training, sampling,
data, model and optimiser values; only the evaluation settings differ.
"""
from configs import default_configs


def get_default_configs():
  config = default_configs.get_default_configs()
  evaluate = config.eval
  evaluate.begin_ckpt = 9
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024
  evaluate.enable_sampling = False
  evaluate.num_samples = 50000
  return config

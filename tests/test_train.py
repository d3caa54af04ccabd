"""Training: DSM losses against numpy, optimizer/EMA against score_sde's formulas, a short
run that learns, kill-and-resume bit-identity, checkpoints readable by restore_official,
batch-size validation and the MNIST configs' shapes.

The training runs use a tiny NCSN++ (nf 8, ch_mult (1, 2), DDPM blocks, no attention
outside the middle block) on sklearn's 8x8 DIGITS with batch 8. All of them share one
config up to non-compiled keys (n_iters, frequencies), so the jitted step is compiled
once per process (the persistent cache of conftest.py serves the later runs).
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_configs
from score_sde_pds import checkpoints, losses, sde_lib, train_lib
from score_sde_pds.models import utils as mutils


# ----------------------------------------------------------------------------- helpers


def tiny_config(**training):
  """VE NCSN++ on 8x8 DIGITS, batch 8, no warmup, constant lr 2e-3, no dropout."""
  c = default_configs.get_default_configs()
  c.training.update(sde='vesde', continuous=True, reduce_mean=True, batch_size=8, n_iters=6,
                    log_freq=1, snapshot_freq=3, snapshot_freq_for_preemption=3, eval_freq=0,
                    n_jitted_steps=1, snapshot_sampling=False)
  c.training.update(**training)
  c.data.update(dataset='DIGITS', image_size=8, num_channels=1, random_flip=False,
                centered=False)
  c.model.update(
      name='ncsnpp', sigma_min=0.01, sigma_max=10., num_scales=100, scale_by_sigma=True,
      ema_rate=0.9, dropout=0.0, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
      resamp_with_conv=True, conditional=True, fir=False, fir_kernel=[1, 3, 3, 1],
      skip_rescale=True, resblock_type='ddpm', progressive='none', progressive_input='none',
      progressive_combine='sum', attention_type='ddpm', init_scale=0.,
      embedding_type='fourier', fourier_scale=16, conv_size=3, normalization='GroupNorm',
      nonlinearity='swish')
  c.optim.update(lr=2e-3, warmup=0, grad_clip=1.)
  c.seed = 3
  return c


def read_log(workdir):
  with open(os.path.join(workdir, train_lib.LOG_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def assert_trees_equal(a, b):
  la, ta = jax.tree.flatten(jax.device_get(a))
  lb, tb = jax.tree.flatten(jax.device_get(b))
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class Linear(nn.Module):
  """out = a x + b label: a network whose output is known in closed form."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    a = self.param('a', lambda k: jnp.asarray(0.7, jnp.float32))
    b = self.param('b', lambda k: jnp.asarray(-0.3, jnp.float32))
    return a * x + b * labels.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))


LINEAR_PARAMS = {'a': jnp.asarray(0.7, jnp.float32), 'b': jnp.asarray(-0.3, jnp.float32)}


# ----------------------------------------------------------------------------- (a) losses


def _numpy_dsm(sde, x0, t, z, reduce_mean, likelihood_weighting):
  """Song et al. 2021 Eq. 7 in float64 numpy for the Linear model (a=0.7, b=-0.3)."""
  x0, t, z = (np.asarray(v, np.float64) for v in (x0, t, z))
  tb = t[:, None, None, None]
  if isinstance(sde, sde_lib.VESDE):
    std = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    xt = x0 + std[:, None, None, None] * z
    score = 0.7 * xt - 0.3 * std[:, None, None, None]          # label = sigma(t)
    g2 = std ** 2 * 2 * np.log(sde.sigma_max / sde.sigma_min)
  else:
    lmc = -0.25 * t ** 2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    if isinstance(sde, sde_lib.subVPSDE):
      std = 1. - np.exp(2 * lmc)
      disc = 1. - np.exp(-2 * sde.beta_min * t - (sde.beta_max - sde.beta_min) * t ** 2)
    else:
      std = np.sqrt(1. - np.exp(2 * lmc))
      disc = 1.
    xt = np.exp(lmc)[:, None, None, None] * x0 + std[:, None, None, None] * z
    out = 0.7 * xt - 0.3 * 999. * tb                             # label = 999 t
    score = -out / std[:, None, None, None]
    g2 = (sde.beta_min + t * (sde.beta_max - sde.beta_min)) * disc
  s = std[:, None, None, None]
  if likelihood_weighting:
    per = ((score + z / s) ** 2).reshape(len(t), -1)
  else:
    per = ((score * s + z) ** 2).reshape(len(t), -1)
  per = per.mean(1) if reduce_mean else 0.5 * per.sum(1)
  if likelihood_weighting:
    per = per * g2
  return per.mean()


@pytest.mark.parametrize('sde', [sde_lib.VESDE(sigma_min=0.01, sigma_max=20.),
                                 sde_lib.VPSDE(beta_min=0.1, beta_max=20.),
                                 sde_lib.subVPSDE(beta_min=0.1, beta_max=20.)],
                         ids=['ve', 'vp', 'subvp'])
@pytest.mark.parametrize('reduce_mean', [True, False])
@pytest.mark.parametrize('likelihood_weighting', [False, True])
def test_dsm_loss_matches_numpy(sde, reduce_mean, likelihood_weighting):
  x0 = np.random.default_rng(0).uniform(size=(5, 4, 4, 2)).astype(np.float32)
  rng = jax.random.PRNGKey(11)
  eps = 1e-5
  loss_fn = losses.get_sde_loss_fn(sde, Linear(), train=False, reduce_mean=reduce_mean,
                                   continuous=True, likelihood_weighting=likelihood_weighting,
                                   eps=eps)
  loss, state = jax.jit(loss_fn)(rng, LINEAR_PARAMS, {}, x0)
  assert state == {}
  # The noise the loss drew: t ~ U(eps, 1) and z ~ N(0, I) from the documented keys.
  t_rng, z_rng, _ = losses.loss_rngs(rng)
  t = jax.random.uniform(t_rng, (5,), minval=eps, maxval=1.)
  z = jax.random.normal(z_rng, x0.shape)
  assert eps <= float(t.min()) and float(t.max()) <= 1.
  expected = _numpy_dsm(sde, x0, t, z, reduce_mean, likelihood_weighting)
  np.testing.assert_allclose(float(loss), expected, rtol=2e-5)


def test_discrete_losses_match_numpy():
  x0 = np.random.default_rng(1).uniform(size=(6, 4, 4, 1)).astype(np.float32)
  rng = jax.random.PRNGKey(5)
  label_rng, z_rng, _ = losses.loss_rngs(rng)
  z = np.asarray(jax.random.normal(z_rng, x0.shape), np.float64)
  # SMLD: labels index the descending sigmas; sigma^2 || s + noise / sigma^2 ||^2.
  ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=10., N=20)
  labels = np.asarray(jax.random.randint(label_rng, (6,), 0, 20))
  sig = np.exp(np.linspace(np.log(10.), np.log(0.01), 20))[labels][:, None, None, None]
  noise = z * sig
  score = 0.7 * (x0 + noise) - 0.3 * labels[:, None, None, None]
  want = (0.5 * ((score + noise / sig ** 2) ** 2).reshape(6, -1).sum(1) * sig[:, 0, 0, 0] ** 2)
  loss, _ = losses.get_smld_loss_fn(ve, Linear(), train=False, reduce_mean=False)(
      rng, LINEAR_PARAMS, {}, x0)
  np.testing.assert_allclose(float(loss), want.mean(), rtol=2e-5)
  # DDPM: || eps_theta(sqrt(abar) x + sqrt(1 - abar) z, i) - z ||^2 (mean over pixels).
  vp = sde_lib.VPSDE(beta_min=0.1, beta_max=20., N=20)
  abar = np.cumprod(1. - np.linspace(0.1 / 20, 20. / 20, 20))[labels][:, None, None, None]
  xt = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * z
  out = 0.7 * xt - 0.3 * labels[:, None, None, None]
  loss, _ = losses.get_ddpm_loss_fn(vp, Linear(), train=False, reduce_mean=True)(
      rng, LINEAR_PARAMS, {}, x0)
  np.testing.assert_allclose(float(loss), ((out - z) ** 2).mean(), rtol=2e-5)


def test_optimizer_and_ema_follow_score_sde():
  """Adam (flax.optim formula, decoupled weight decay), warmup lr * min(k / warmup, 1)
  with lr 0 at update 0, global-norm clipping x * c / max(|g|, c), EMA of new params."""
  c = tiny_config()
  del c.optim.weight_decay  # the default is the int 0; ml_collections will not cast
  c.optim.weight_decay = 0.01
  c.optim.update(lr=0.1, warmup=3, grad_clip=0.5, beta1=0.9, eps=1e-8)
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=20.)
  opt = losses.get_optimizer(c)
  step = jax.jit(losses.get_step_fn(sde, Linear(), train=True, optimizer=opt,
                                    reduce_mean=True))
  state = losses.init_state(LINEAR_PARAMS, {}, opt, 0.9, jax.random.PRNGKey(0))
  x0 = np.random.default_rng(2).uniform(size=(4, 4, 4, 1)).astype(np.float32)
  grad_fn = jax.grad(lambda p, r: losses.get_sde_loss_fn(
      sde, Linear(), False, reduce_mean=True, likelihood_weighting=False)(r, p, {}, x0)[0])
  p = {k: np.float64(v) for k, v in LINEAR_PARAMS.items()}
  ema = dict(p)
  m = {k: 0. for k in p}
  v = {k: 0. for k in p}
  for k in range(4):
    rng = jax.random.PRNGKey(100 + k)
    g = {n: np.float64(x) for n, x in grad_fn({n: jnp.float32(y) for n, y in p.items()},
                                               rng).items()}
    norm = np.sqrt(sum(x ** 2 for x in g.values()))
    g = {n: x * 0.5 / max(norm, 0.5) for n, x in g.items()}
    lr = 0.1 * min(k / 3, 1.)
    for n in p:
      m[n] = 0.9 * m[n] + 0.1 * g[n]
      v[n] = 0.999 * v[n] + 0.001 * g[n] ** 2
      mh, vh = m[n] / (1 - 0.9 ** (k + 1)), v[n] / (1 - 0.999 ** (k + 1))
      p[n] = p[n] - lr * mh / (np.sqrt(vh) + 1e-8) - lr * 0.01 * p[n]
      ema[n] = 0.9 * ema[n] + 0.1 * p[n]
    state, _ = step(state, x0, rng)
    if k == 0:  # update 0 has lr 0: params unchanged
      assert_trees_equal(state.params, LINEAR_PARAMS)
    assert int(state.step) == k + 1
    for n in p:
      np.testing.assert_allclose(float(state.params[n]), p[n], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(float(state.params_ema[n]), ema[n], rtol=1e-5, atol=1e-6)
  assert float(losses.get_lr_schedule(c)(1)) == pytest.approx(0.1 / 3)


# ----------------------------------------------------------------------------- training runs


N_ITERS = 30


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """30 updates, a preemption checkpoint every 3, checkpoint_1/2 at 15/30: (state, workdir)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  state = train_lib.train(tiny_config(n_iters=N_ITERS, snapshot_freq=15), workdir)
  return state, workdir


def test_training_reduces_the_loss(uninterrupted):
  state, workdir = uninterrupted
  rows = [r for r in read_log(workdir) if 'loss' in r]
  assert [r['step'] for r in rows] == list(range(1, N_ITERS + 1))
  loss = np.array([r['loss'] for r in rows])
  assert np.all(np.isfinite(loss))
  first, last = loss[:5].mean(), loss[-5:].mean()
  assert last < 0.85 * first, (first, last, loss)
  assert int(state.step) == N_ITERS
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['training']['n_iters'] == N_ITERS
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['checkpoint_1',
                                                                      'checkpoint_2']


def test_resume_gives_the_uninterrupted_result(uninterrupted, tmp_path):
  ref, ref_dir = uninterrupted
  workdir = str(tmp_path)
  first = train_lib.train(tiny_config(n_iters=3, snapshot_freq=15), workdir)  # stops at 3
  assert int(first.step) == 3
  resumed = train_lib.train(tiny_config(n_iters=N_ITERS, snapshot_freq=15), workdir)
  assert int(resumed.step) == N_ITERS
  assert_trees_equal(resumed, ref)  # params, params_ema, opt_state, rng, step
  # The log holds each step once, with the uninterrupted run's losses.
  rows, ref_rows = read_log(workdir), read_log(ref_dir)
  assert [r['step'] for r in rows] == list(range(1, N_ITERS + 1))
  assert [r['loss'] for r in rows] == [r['loss'] for r in ref_rows]
  for k in (1, 2):
    name = os.path.join('checkpoints', f'checkpoint_{k}')
    with open(os.path.join(workdir, name), 'rb') as f, open(os.path.join(ref_dir, name),
                                                             'rb') as g:
      assert f.read() == g.read()


def test_killed_run_restarts_from_preemption_checkpoint(uninterrupted, tmp_path, monkeypatch):
  ref, _ = uninterrupted
  workdir = str(tmp_path)
  config = tiny_config(n_iters=N_ITERS, snapshot_freq=15)
  append = train_lib._append_log

  def dying_append(path, row):
    append(path, row)
    if row.get('step') == 5:
      raise KeyboardInterrupt('killed after update 5')

  monkeypatch.setattr(train_lib, '_append_log', dying_append)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train(config, workdir)
  monkeypatch.setattr(train_lib, '_append_log', append)
  meta = os.path.join(workdir, 'checkpoints-meta', 'checkpoint')
  assert int(checkpoints._read_msgpack(meta)['step']) == 3
  resumed = train_lib.train(config, workdir)  # the same command again
  assert_trees_equal(resumed, ref)
  assert [r['step'] for r in read_log(workdir)] == list(range(1, N_ITERS + 1))
  # Nothing left to do: a rerun returns the same state without training.
  again = train_lib.train(config, workdir)
  assert_trees_equal(again, ref)


def test_restore_official_reads_training_checkpoints(uninterrupted):
  state, workdir = uninterrupted
  config = tiny_config()
  raw = checkpoints._read_msgpack(os.path.join(workdir, 'checkpoints', 'checkpoint_2'))
  assert {'step', 'params_ema', 'params', 'opt_state', 'rng'} <= set(raw)
  assert int(raw['step']) == N_ITERS
  params = checkpoints.restore_official(workdir, config)            # newest: checkpoint_2
  raw_params = checkpoints.restore_official(workdir, config, which='model')
  assert_trees_equal(params, state.params_ema)
  assert_trees_equal(raw_params, state.params)
  older = checkpoints.restore_official(workdir, config, ckpt_id=1)
  assert not np.array_equal(np.asarray(jax.tree.leaves(older)[0]),
                            np.asarray(jax.tree.leaves(params)[0]))
  model = mutils.get_model(config.model.name)(config=config)
  apply = jax.jit(lambda p, x, s: model.apply({'params': p}, x, s, train=False))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
  sigmas = jnp.asarray([0.05, 1., 8.], jnp.float32)
  out_file = apply(params, x, sigmas)
  out_mem = apply(jax.device_get(state.params_ema), x, sigmas)
  np.testing.assert_array_equal(np.asarray(out_file), np.asarray(out_mem))
  assert float(jnp.abs(out_file).max()) > 0


def test_warm_start_fine_tunes_from_weights_and_resume_wins(uninterrupted, tmp_path):
  """training.init_checkpoint starts params and EMA (step 0, fresh Adam) from a file's
  weights; a workdir with its own checkpoint resumes and never reads init_checkpoint."""
  ref, ref_dir = uninterrupted
  ema = checkpoints.restore_official(ref_dir, tiny_config())
  workdir = str(tmp_path / 'ft')
  # n_iters=0: the state as the warm start leaves it
  start = train_lib.train(tiny_config(n_iters=0, init_checkpoint=ref_dir), workdir)
  assert int(start.step) == 0
  assert_trees_equal(start.params, ema)
  assert_trees_equal(start.params_ema, ema)
  assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves(start.opt_state)
             if jnp.issubdtype(m.dtype, jnp.floating))
  raw = train_lib.train(tiny_config(n_iters=0, init_checkpoint=ref_dir, init_weights='model'),
                        str(tmp_path / 'raw'))
  assert_trees_equal(raw.params, jax.device_get(ref.params))
  # a short fine-tune starts at the trained model's loss, far below a fresh model's
  state = train_lib.train(tiny_config(n_iters=3, init_checkpoint=ref_dir), workdir)
  assert int(state.step) == 3
  fresh = [r['loss'] for r in read_log(ref_dir) if 'loss' in r]
  tuned = [r['loss'] for r in read_log(workdir) if 'loss' in r]
  assert np.mean(tuned) < 0.9 * np.mean(fresh[:3]), (tuned, fresh[:3])
  # resuming that workdir ignores init_checkpoint (here a file that does not exist)
  again = train_lib.train(tiny_config(n_iters=3, init_checkpoint=str(tmp_path / 'nope')),
                          workdir)
  assert_trees_equal(again, state)
  with pytest.raises(ValueError, match=r'config\.training\.init_weights'):
    train_lib.train(tiny_config(n_iters=0, init_checkpoint=ref_dir, init_weights='emma'),
                    str(tmp_path / 'bad'))
  with pytest.raises(FileNotFoundError, match='nope'):
    train_lib.train(tiny_config(n_iters=0, init_checkpoint=str(tmp_path / 'nope')),
                    str(tmp_path / 'bad2'))


def test_cosine_decay_schedule():
  """optim.decay='cosine': score_sde's linear warmup, then lr_k = lr (f + (1 - f)
  (1 + cos(pi (k - w) / (n - w))) / 2) down to lr f at k = n = training.n_iters."""
  c = tiny_config(n_iters=110)
  c.optim.update(lr=0.01, warmup=10, decay='cosine', final_lr_fraction=0.1)
  sched = losses.get_lr_schedule(c)
  for k in (0, 5, 10, 35, 60, 99, 110, 200):
    if k <= 10:
      want = 0.01 * k / 10
    else:
      u = min((k - 10) / 100, 1.)
      want = 0.01 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * u)))
    assert float(sched(k)) == pytest.approx(want, rel=1e-5, abs=1e-9), k
  c.optim.decay = 'linear'
  with pytest.raises(ValueError, match=r"config\.optim\.decay must be 'none' or 'cosine'"):
    losses.get_lr_schedule(c)
  c.optim.update(decay='cosine', warmup=200)
  with pytest.raises(ValueError, match=r'config\.training\.n_iters \(110\) > '):
    losses.get_lr_schedule(c)


_TWO_DEVICE_SCRIPT = r"""
import os, sys
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), 'tests'))
import conftest  # noqa: F401  (compilation cache)
import jax
assert jax.device_count() == 2, jax.devices()
import test_train
from score_sde_pds import train_lib
config = test_train.tiny_config(n_iters=test_train.N_ITERS, snapshot_freq=15, log_freq=3,
                                n_jitted_steps=3)
state = train_lib.train(config, sys.argv[1])
sh = jax.tree.leaves(state.params)[0].sharding
assert sh.mesh.shape['data'] == 2 and sh.is_fully_replicated, sh
"""


def test_two_devices_and_jitted_chunks_match(uninterrupted, tmp_path):
  """The global batch split over 2 CPU devices (batch sharded on 'data', state
  replicated) and 3 updates per jitted lax.scan give the 1-device run's numbers up to
  float rounding: same data order, same noise."""
  ref, ref_dir = uninterrupted
  workdir = str(tmp_path)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  proc = subprocess.run([sys.executable, '-c', _TWO_DEVICE_SCRIPT, workdir], cwd=root,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  two = train_lib.restore_state(os.path.join(workdir, 'checkpoints-meta', 'checkpoint'),
                                jax.device_get(ref))
  assert int(two.step) == N_ITERS
  for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(jax.device_get(ref.params))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  ref_loss = np.array([r['loss'] for r in read_log(ref_dir) if 'loss' in r])
  rows = [r for r in read_log(workdir) if 'loss' in r]
  assert [r['step'] for r in rows] == list(range(3, N_ITERS + 1, 3))
  np.testing.assert_allclose([r['loss'] for r in rows], ref_loss.reshape(-1, 3).mean(1),
                             rtol=1e-4)


# ----------------------------------------------------------------------------- validation


def test_batch_size_must_split_over_devices(monkeypatch, tmp_path):
  c = tiny_config()
  with pytest.raises(ValueError, match=r'config\.training\.batch_size=8 .* devices \(3\)'):
    train_lib.check_batch_size(c, n_devices=3, n_processes=1)
  assert train_lib.check_batch_size(c, n_devices=4, n_processes=2) == 4
  monkeypatch.setattr(jax, 'device_count', lambda *a, **k: 3)
  with pytest.raises(ValueError, match=r'config\.training\.batch_size'):
    train_lib.train(c, str(tmp_path))
  c.training.n_jitted_steps = 0
  with pytest.raises(ValueError, match=r'config\.training\.n_jitted_steps'):
    train_lib.validate_train_config(c)


def test_step_plan_and_batches_are_deterministic():
  # n_jitted_steps chunks never straddle a log/checkpoint boundary.
  plan = [train_lib._plan(s, 20, 4, [10, 6]) for s in range(20)]
  assert plan[0] == 4 and plan[4] == 1 and plan[8] == 1 and plan[12] == 4 and plan[16] == 1
  from score_sde_pds import datasets
  src = datasets.ArraySource(np.random.default_rng(0).uniform(size=(10, 2, 2, 1)),
                             random_flip=True)
  full = train_lib.StepBatches(src, 4, seed=1)
  halves = [train_lib.StepBatches(src, 4, seed=1, rows=r) for r in ((0, 2), (2, 4))]
  for k in (0, 1, 2, 7):  # 2 batches per epoch; any k directly, any process split
    np.testing.assert_array_equal(full.batch(k), np.concatenate([h.batch(k) for h in halves]))
  assert len(set(full.indices(0)) | set(full.indices(1))) == 8


@pytest.mark.parametrize('name', ['ve.mnist_ncsnpp_small', 'vp.mnist_ddpmpp_small'])
def test_mnist_configs_shapes(name):
  import importlib
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.data.dataset == 'MNIST' and config.data.num_channels == 1
  sde, _ = sde_lib.get_sde(config, N=config.model.num_scales)
  box = {}

  def init(rng):
    model, model_state, params = mutils.init_model(rng, config)
    box['model'] = model
    return model_state, params

  model_state, params = jax.eval_shape(init, jax.random.PRNGKey(0))
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert 2e5 < n < 3e6, n
  opt = losses.get_optimizer(config)
  state = jax.eval_shape(lambda p: losses.init_state(p, {}, opt, config.model.ema_rate,
                                                     jax.random.PRNGKey(0)), params)
  batch = jax.ShapeDtypeStruct((config.training.batch_size, 28, 28, 1), jnp.float32)
  step = losses.get_step_fn_from_config(config, sde, box['model'], train=True, optimizer=opt)
  new_state, loss = jax.eval_shape(step, state, batch, jax.random.PRNGKey(0))
  assert loss.shape == ()
  assert jax.tree.structure(new_state) == jax.tree.structure(state)

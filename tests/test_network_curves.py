"""integrators.curves on network configs: sampler specs -> configs, step counts and NFE.

The end-to-end run (sampling the bundled model for every cell) is a script run, not a test:
README "Integrators on MNIST" has its command and output. Here: what decides every cell's
sampler, i.e. the spec parser, the config each spec maps to and the NFE-per-step rule that
turns an NFE budget into a step count.
"""
import pytest

from configs.ve import mnist_ncsnpp_small
from score_sde_pds import sde_lib
from score_sde_pds.integrators import curves


def test_parse_sampler_spec():
  p = curves.parse_sampler_spec
  assert p('pc:reverse_diffusion:langevin') == {'method': 'pc', 'predictor': 'reverse_diffusion',
                                                 'corrector': 'langevin'}
  assert p('pc:euler_maruyama') == {'method': 'pc', 'predictor': 'euler_maruyama',
                                    'corrector': 'none'}
  assert p('ode:heun') == {'method': 'ode', 'ode_method': 'heun'}
  assert p(' splitting : oba : noise_scale=0.5 ') == {'method': 'splitting', 'integrator': 'oba',
                                                      'noise_scale': 0.5}
  assert p('conjugate:euler:lam=1:grid=logsnr:pds=1') == {
      'method': 'conjugate', 'integrator': 'euler', 'lam': 1., 'grid': 'logsnr', 'pds': 1}
  for bad, words in (('ddim', 'must start with'), ('pc', 'predictor[:corrector]'),
                     ('pc:a:b:c', 'predictor[:corrector]'), ('splitting:a:b', 'exactly one'),
                     ('conjugate:euler:foo=1', "unknown key 'foo'"),
                     ('conjugate:euler:lam=x', "lam='x'"), ('pc:euler_maruyama:pds=2', "pds='2'")):
    with pytest.raises(ValueError, match=None) as e:
      p(bad)
    assert words in str(e.value) and repr(bad) in str(e.value)


def test_spec_config_sets_the_steps_of_each_method():
  config = mnist_ncsnpp_small.get_config()
  config.model.num_scales = 200
  assert config.sampling.pds.enabled          # the demo's default: curves turn it off
  for n in (7, 33, 200):
    cfg = curves.spec_config(config, curves.parse_sampler_spec('pc:euler_maruyama'), n)
    assert sde_lib.get_sde(cfg)[0].N == n and not cfg.sampling.pds.enabled
    assert cfg.sampling.predictor == 'euler_maruyama' and cfg.sampling.corrector == 'none'
  cfg = curves.spec_config(config, curves.parse_sampler_spec('ode:heun:pds=1'), 9)
  assert cfg.sampling.ode_steps == 9 and cfg.sampling.ode_method == 'heun'
  assert cfg.sampling.pds.enabled
  cfg = curves.spec_config(config, curves.parse_sampler_spec('conjugate:euler:lam=0.5'), 11)
  assert (cfg.sampling.method, cfg.sampling.num_steps, cfg.sampling.lam) == ('conjugate', 11, 0.5)
  assert config.sampling.method == 'pc' and config.sampling.pds.enabled   # not mutated


def test_nfe_rule_matches_the_samplers():
  """NFE = per * steps + extra, probed from the samplers themselves (zero score, batch 1):
  predictor + corrector = 2 per PC step (denoising reuses the last predictor call);
  Heun on the PF ODE: 2 per step plus 1 for the final denoising step."""
  config = mnist_ncsnpp_small.get_config()
  shape = (1, 28, 28, 1)
  assert curves.network_nfe_rule(
      config, curves.parse_sampler_spec('pc:reverse_diffusion:langevin'), shape) == (2, 0)
  assert curves.network_nfe_rule(config, curves.parse_sampler_spec('ode:heun'), shape) == (2, 1)

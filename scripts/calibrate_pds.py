"""Calibrates PDS on the Gaussian proxy of the data statistics (no network involved).

  python scripts/calibrate_pds.py --config configs/analytic/gaussian_field.py --workdir W \
      [--output_dir W/pds_calibration] [--etas 0.5,1,2] [--config.model.num_scales=50 ...]

For the config's statistics (config.sampling.pds.freq_stats / space_stats, relative to
--workdir; the analytic oracle uses its exact statistics), SDE, N = num_scales / speed_up
and sampler, it prints and writes into --output_dir:
  calibrated_gain.npz   the per-frequency gains r(k) of config.sampling.pds.filter=
                        'calibrated' (a statistics-like file: load_statistics reads its
                        'freq' key; point config.sampling.pds.gain_file at it)
  calibration.json      alpha='auto' (a number or 'inf' = vanilla), the proxy's Frechet
                        distances of vanilla / auto alpha / the calibrated gains, the FD of
                        the alpha grid, and the marginal mode's choice for each --etas value
  calibration.png       gains vs R / max R (calibrated, auto-alpha map, alpha = 5 map),
                        the calibrated gain as an image, FD vs alpha
The logic is in score_sde_pds/calibration.py. This is the proxy's choice only: a sampling
run with alpha='auto' also checks it on the network with a pilot (score_sde_pds/pilot.py,
config.sampling.pds.pilot_samples), which may move it.
"""
import math
import os
import sys

from absl import app, flags
from ml_collections.config_flags import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).', lock_config=True)
flags.DEFINE_string('workdir', '.', 'Where relative statistics paths are looked up.')
flags.DEFINE_string('output_dir', '', "Output folder; '' -> <workdir>/pds_calibration.")
flags.DEFINE_list('etas', ['0.5', '1', '2'], "eta values of the marginal-mode calibration "
                  "('' to skip).")
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'score_sde_pds_jax'),
                    "Persistent JAX compilation cache folder ('' to disable).")
flags.mark_flags_as_required(['config'])


def _num(x):
  """JSON-safe number: inf / nan -> strings."""
  x = float(x)
  return x if math.isfinite(x) else str(x)


def _f(x):
  return f'{x:.5g}' if isinstance(x, float) else str(x)


def calibrate(config, workdir, etas=()):
  """Runs the calibration of `config`; returns (gain (H, W, C), summary dict, grid)."""
  import copy
  from score_sde_pds import calibration, sweep
  stats = sweep.load_statistics(config, workdir, 'auto')
  kw = calibration.config_kwargs(config)
  alpha, ainfo = calibration.auto_alpha(stats['freq'], space_stats=stats['space'],
                                        return_info=True, **kw)
  gain, ginfo = calibration.calibrate_gain(stats['freq'], return_info=True, **kw)
  fd5 = calibration.predicted_fd(stats['freq'], space_stats=stats['space'], alpha=5.0, **kw)[0]
  summary = {
      'sde': str(config.training.sde), 'N': int(kw['N']), 'eps': kw['eps'],
      'predictor': kw['predictor'], 'corrector': kw['corrector'], 'snr': kw['snr'],
      'n_steps': kw['n_steps'], 'mode': kw['mode'], 'eta': kw['eta'], 'omega': kw['omega'],
      'space_stats': stats['space'] is not None,
      'auto_alpha': calibration.alpha_label(alpha), 'proxy_fd_auto': _num(ainfo['fd']),
      'proxy_fd_vanilla': _num(ainfo['fd_vanilla']), 'proxy_fd_alpha5': _num(fd5),
      'proxy_fd_calibrated': _num(ginfo['fd']), 'calibration': ginfo['method'],
      'groups': ainfo['groups'], 'binned': ainfo['binned'],
      'seconds_auto_alpha': round(ainfo['seconds'], 3),
      'seconds_calibrated': round(ginfo['seconds'], 3), 'marginal': []}
  for eta in etas:
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
      cfg.sampling.pds.mode = 'marginal'
      cfg.sampling.pds.eta = float(eta)
    mk = calibration.config_kwargs(cfg)
    a, mi = calibration.auto_alpha(stats['freq'], space_stats=stats['space'],
                                   return_info=True, **mk)
    g_fd = calibration.calibrate_gain(stats['freq'], return_info=True, **mk)[1]['fd']
    summary['marginal'].append({'eta': float(eta), 'auto_alpha': calibration.alpha_label(a),
                                'proxy_fd_auto': _num(mi['fd']),
                                'proxy_fd_identity': _num(mi['fd_identity']),
                                'proxy_fd_calibrated': _num(g_fd)})
  return gain, summary, ainfo['grid'], stats


def plot_png(gain, summary, grid, stats):
  """calibration.png: gains vs R / max R, the calibrated gain image, FD vs alpha."""
  from score_sde_pds import utils
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  R = np.asarray(stats['freq'], np.float64)
  s_hat = (R / R.max()).reshape(-1)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
  ax = axes[0]
  ax.scatter(s_hat, np.asarray(gain).reshape(-1), s=6, alpha=0.6, label='calibrated r(k)')
  xs = np.linspace(s_hat.min(), 1, 200)
  a = summary['auto_alpha']
  if a != 'inf':
    ax.plot(xs, a / (xs + a - 1), 'r-', label=f"alpha map, auto alpha={a:.3g}")
  else:
    ax.axhline(1., color='r', label='auto alpha = inf (identity)')
  ax.plot(xs, 5 / (xs + 4), 'k--', label='alpha map, alpha=5')
  ax.set_xlabel('R / max R')
  ax.set_ylabel('frequency gain')
  ax.set_yscale('log')
  ax.legend(fontsize=8)
  ax.set_title(f"{summary['predictor']}:{summary['corrector']}, N={summary['N']}, "
               f"{summary['mode']}", fontsize=9)
  ax = axes[1]
  im = ax.imshow(np.fft.fftshift(np.asarray(gain)[..., 0]), cmap='viridis')
  fig.colorbar(im, ax=ax)
  ax.set_title('calibrated r(k), channel 0 (centred spectrum)', fontsize=9)
  ax = axes[2]
  fd = np.asarray(grid['fd'], np.float64)
  ok = np.isfinite(fd)
  ax.loglog(np.asarray(grid['alpha'])[ok] - 1, fd[ok], '.-', label='proxy FD, alpha filter')
  for key, lab, st in (('proxy_fd_vanilla', 'vanilla', 'k--'),
                       ('proxy_fd_calibrated', 'calibrated gains', 'g:')):
    v = summary[key]
    if isinstance(v, float):
      ax.axhline(v, color=st[0], linestyle=st[1:], label=f'{lab}: {v:.3g}')
  if a != 'inf':
    ax.plot([a - 1], [summary['proxy_fd_auto']], 'r*', markersize=12, label='auto alpha')
  finite = [v for v in (summary['proxy_fd_vanilla'], summary['proxy_fd_auto'])
            if isinstance(v, float)]
  if finite:   # diverging alphas (FD ~ 1e100) would flatten the interesting range
    ax.set_ylim(top=100 * max(finite))
  ax.set_xlabel('alpha - 1')
  ax.set_ylabel('proxy Frechet distance')
  ax.legend(fontsize=8)
  fig.tight_layout()
  return utils.figure_png_bytes(fig, dpi=90)


def main(argv):
  del argv
  from score_sde_pds import utils as _utils
  _utils.enable_compilation_cache(FLAGS.compilation_cache)
  from score_sde_pds import calibration, utils
  config = FLAGS.config
  out = FLAGS.output_dir or os.path.join(FLAGS.workdir, 'pds_calibration')
  try:
    etas = [float(e) for e in FLAGS.etas if str(e).strip()]
  except ValueError:
    print(f'error: --etas must be numbers, got {",".join(FLAGS.etas)!r}', file=sys.stderr)
    sys.exit(1)
  try:
    gain, summary, grid, stats = calibrate(config, FLAGS.workdir, etas)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  os.makedirs(out, exist_ok=True)
  meta = {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}
  calibration.save_gain(os.path.join(out, 'calibrated_gain.npz'), gain,
                        **{k: str(v) if isinstance(v, bool) else v for k, v in meta.items()})
  utils.atomic_write_json(os.path.join(out, 'calibration.json'),
                          dict(summary, alpha_grid={'alpha': [_num(v) for v in grid['alpha']],
                                                    'fd': [_num(v) for v in grid['fd']]}))
  utils.atomic_write_bytes(os.path.join(out, 'calibration.png'),
                           plot_png(gain, summary, grid, stats))
  s = summary
  print(f"{s['sde']} N={s['N']} {s['predictor']}:{s['corrector']} mode={s['mode']} "
        f"({s['groups']} mode groups{', binned' if s['binned'] else ''})")
  print(f"  alpha='auto' -> {_f(s['auto_alpha'])}: proxy FD {_f(s['proxy_fd_auto'])} "
        f"(vanilla {_f(s['proxy_fd_vanilla'])}, alpha=5 {_f(s['proxy_fd_alpha5'])}; "
        f"{s['seconds_auto_alpha']:.2f} s)")
  print(f"  filter='calibrated': proxy FD {_f(s['proxy_fd_calibrated'])} ({s['calibration']}; "
        f"{s['seconds_calibrated']:.2f} s)")
  for m in s['marginal']:
    print(f"  mode='marginal' eta={m['eta']:g}: alpha='auto' -> {_f(m['auto_alpha'])} proxy "
          f"FD {_f(m['proxy_fd_auto'])} (M=I: {_f(m['proxy_fd_identity'])}), calibrated "
          f"{_f(m['proxy_fd_calibrated'])}")
  print(f'wrote {out}/calibrated_gain.npz, calibration.json, calibration.png')


if __name__ == '__main__':
  app.run(main)

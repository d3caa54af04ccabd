#!/usr/bin/env python
"""Converts an official checkpoint once into a Flax params file.

  python scripts/convert_checkpoint.py --config configs/ve/ffhq_ncsnpp_continuous.py \
      --input exp/ve/ffhq_ncsnpp_continuous/checkpoint_48.pth --output ffhq_ema.msgpack

`--input` may be a score_sde_pytorch .pth, a score_sde (JAX) checkpoint_<k>, an official
PSLD (mandt-lab/PSLD) PyTorch Lightning .ckpt (EMA network `ema_score_fn.*`, or
`score_fn.*` with --which model; see score_sde_pds/psld_checkpoints.py), a
checkpoints/ directory or a workdir. PSLD example:

  python scripts/convert_checkpoint.py --config configs/psld/cifar10_ncsnpp.py \
      --input psld-hsm_gamma=0.02_nu=4.02_cifar10_...ckpt --output psld_cifar10_ema.msgpack

The weights are checked against the config's model before anything is written;
`score_sde_pds.checkpoints.restore_official` reads the output. `--config` is a config
module with get_config() (configs/...py) or a JSON dump of a config (merged onto
configs/default_configs.py when that exists).
"""
import argparse
import importlib.util
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def _update(config, values):
  """Recursively sets JSON values on a ConfigDict (lists become tuples)."""
  import ml_collections
  for key, value in values.items():
    if isinstance(value, dict):
      if key not in config:
        config[key] = ml_collections.ConfigDict()
      _update(config[key], value)
    else:
      value = tuple(value) if isinstance(value, list) else value
      if key in config:
        with config.ignore_type():
          config[key] = value
      else:
        config[key] = value
  return config


def load_config(path):
  """Loads a config from a .py module (get_config()) or a .json dump."""
  import ml_collections
  if path.endswith('.json'):
    with open(path) as f:
      values = json.load(f)
    try:
      from configs.default_configs import get_default_configs
      base = get_default_configs()
    except ImportError:
      base = ml_collections.ConfigDict()
    return _update(base, values)
  spec = importlib.util.spec_from_file_location('_convert_config', path)
  if spec is None:
    raise SystemExit(f'--config {path!r}: not a .py config module or a .json file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='config .py (get_config) or .json')
  parser.add_argument('--input', required=True,
                      help='checkpoint file (.pth, checkpoint_<k> or PSLD .ckpt), checkpoints dir '
                      'or workdir')
  parser.add_argument('--output', required=True, help='Flax params file to write (.msgpack)')
  parser.add_argument('--which', default='ema', choices=('ema', 'model'),
                      help="'ema' (sampling weights, default) or 'model' (raw weights)")
  parser.add_argument('--ckpt_id', type=int, default=None,
                      help='checkpoint_<k> to take from a directory (default: newest)')
  args = parser.parse_args(argv)

  from score_sde_pds import checkpoints
  config = load_config(args.config)
  start = time.time()
  try:
    _, meta = checkpoints.convert_checkpoint(args.input, config, args.output,
                                             ckpt_id=args.ckpt_id, which=args.which)
  except (FileNotFoundError, checkpoints.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f"converted {meta['source']} ({meta['source_format']}, {args.which} weights) -> "
        f"{args.output}: {meta['num_params']:,} parameters of model "
        f"{meta['model_name']!r}, validated ({time.time() - start:.1f} s)")
  return 0


if __name__ == '__main__':
  sys.exit(main())

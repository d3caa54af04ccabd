#!/usr/bin/env python
"""Converts pytorch-fid's FID Inception weights once into a torch-free .npz.

  python scripts/convert_inception.py --input pt_inception-2015-12-05-6726825d.pth \
      --output inception_fid.npz

The .pth is read without torch (score_sde_pds.checkpoints.load_torch_checkpoint) and
checked against the Flax FID Inception before anything is written. The .npz holds the
472 float32 tensors under their weight-file names (``*.num_batches_tracked`` dropped)
plus a json record (source file, its sha256); point ``config.eval.inception_path`` at
it. Get the .pth from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
"""
import argparse
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True,
                      help='pt_inception-2015-12-05-6726825d.pth (or an .npz conversion)')
  parser.add_argument('--output', required=True, help='.npz file to write')
  args = parser.parse_args(argv)

  import numpy as np
  from score_sde_pds import checkpoints, utils
  from score_sde_pds.evaluation import inception

  start = time.time()
  try:
    state = inception.read_state_dict(args.input)
    inception.params_from_state_dict(state, source=args.input)  # validates every tensor
  except (FileNotFoundError, checkpoints.CheckpointError) as e:
    raise SystemExit(f'convert_inception: {e}') from None
  shapes = inception.expected_state_dict_shapes()
  tensors = {name: np.asarray(state[name], np.float32) for name in shapes}
  sha = inception.weights_hash(args.input)
  meta = {'source': os.path.basename(args.input), 'source_sha256': sha,
          'official_file': sha == inception.WEIGHTS_SHA256,
          'num_tensors': len(tensors),
          'num_values': int(sum(t.size for t in tensors.values())),
          'format': 'pytorch-fid FID Inception state dict (torch names and layouts), float32'}
  utils.atomic_save_npz(args.output, **tensors,
                        **{inception.NPZ_META_KEY: np.array(json.dumps(meta, sort_keys=True))})
  official = 'the official file' if meta['official_file'] else 'NOT the official file'
  print(f'wrote {args.output}: {meta["num_tensors"]} tensors, {meta["num_values"]:,} values '
        f'from {args.input} (sha256 {sha}, {official}) in {time.time() - start:.1f}s')
  return 0


if __name__ == '__main__':
  sys.exit(main())

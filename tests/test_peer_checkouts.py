"""scripts/peer_checkouts.py: peers' code imported side by side without clashing."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'scripts'))
import peer_checkouts  # noqa: E402


def _fake_checkout(root, tag):
  """A checkout with the peers' top-level names: sampling.py importing sde_lib and
  models.utils, each reporting `tag`."""
  os.makedirs(os.path.join(root, 'models'))
  with open(os.path.join(root, 'sde_lib.py'), 'w') as f:
    f.write(f'TAG = {tag!r}\n')
  with open(os.path.join(root, 'models', '__init__.py'), 'w') as f:
    f.write('')
  with open(os.path.join(root, 'models', 'utils.py'), 'w') as f:
    f.write(f'import sde_lib\nTAG = {tag!r}\ndef sde_tag():\n  return sde_lib.TAG\n')
  with open(os.path.join(root, 'sampling.py'), 'w') as f:
    f.write(f'import sde_lib\nfrom models import utils as mutils\nTAG = {tag!r}\n'
            'def tags():\n  return TAG, sde_lib.TAG, mutils.TAG, mutils.sde_tag()\n')
  return str(root)


def test_two_checkouts_with_the_same_module_names_stay_apart(tmp_path):
  a = _fake_checkout(tmp_path / 'a', 'A')
  b = _fake_checkout(tmp_path / 'b', 'B')
  sentinel = type(sys)('sampling')          # a module of that name imported before
  sys.modules['sampling'] = sentinel
  try:
    ma = peer_checkouts.import_checkout(a, ('sampling', 'models.utils'))
    mb = peer_checkouts.import_checkout(b, ('sampling', 'models.utils'))
    # each checkout's modules see their own siblings, also when called afterwards
    assert ma['sampling'].tags() == ('A',) * 4
    assert mb['sampling'].tags() == ('B',) * 4
    assert ma['models.utils'] is not mb['models.utils']
    # sys.modules is as before: the earlier module is back, nothing of a or b is left
    assert sys.modules['sampling'] is sentinel
    assert not [n for n, m in sys.modules.items()
                if str(getattr(m, '__file__', '') or '').startswith(str(tmp_path))]
  finally:
    del sys.modules['sampling']


def test_wrong_path_is_named(tmp_path):
  with pytest.raises(ValueError, match=r"sampling\.py"):
    peer_checkouts.import_checkout(str(tmp_path), ('sampling',))

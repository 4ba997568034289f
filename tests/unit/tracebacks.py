"""What a remote Python prints when our launcher cannot import TensorBoard.

``SIX`` and ``NUMPY2`` were captured from TensorBoard 2.12.3 (pip's own
choice of dependencies, Python 3.11) running ``tasks/launcher.py``;
``MAIN_LIB`` is TensorBoard 2.4.1's answer to the launcher's import of
``tensorboard.main_lib``, ``PKG_RESOURCES`` TensorBoard 2.20's under
setuptools 82 (../shared/facts/tensorboard-versions.md). ``LAUNCH`` and
``SITE`` stand for the launcher's path and site-packages: :func:`text`
fills them in.
"""

SIX = """\
Traceback (most recent call last):
  File "LAUNCH", line 132, in <module>
    main(sys.argv[1:])
  File "LAUNCH", line 65, in main
    from tensorboard import default, program, version
  File "SITE/tensorboard/default.py", line 33, in <module>
    from tensorboard.plugins.audio import audio_plugin
  File "SITE/tensorboard/plugins/audio/audio_plugin.py", line 23, in <module>
    from tensorboard import plugin_util
  File "SITE/tensorboard/plugin_util.py", line 20, in <module>
    from tensorboard._vendor.bleach.sanitizer import Cleaner
  File "SITE/tensorboard/_vendor/bleach/__init__.py", line 5, in <module>
    from tensorboard._vendor.bleach.linkifier import (
  File "SITE/tensorboard/_vendor/bleach/linkifier.py", line 4, in <module>
    from tensorboard._vendor import html5lib
  File "SITE/tensorboard/_vendor/html5lib/__init__.py", line 25, in <module>
    from .html5parser import HTMLParser, parse, parseFragment
  File "SITE/tensorboard/_vendor/html5lib/html5parser.py", line 2, in <module>
    from six import with_metaclass, viewkeys
ModuleNotFoundError: No module named 'six'
"""

NUMPY2 = """\
Traceback (most recent call last):
  File "LAUNCH", line 132, in <module>
    main(sys.argv[1:])
  File "LAUNCH", line 65, in main
    from tensorboard import default, program, version
  File "SITE/tensorboard/default.py", line 40, in <module>
    from tensorboard.plugins.hparams import hparams_plugin
  File "SITE/tensorboard/plugins/hparams/hparams_plugin.py", line 30, in <module>
    from tensorboard.plugins.hparams import backend_context
  File "SITE/tensorboard/plugins/hparams/backend_context.py", line 24, in <module>
    from tensorboard.plugins.hparams import metadata
  File "SITE/tensorboard/plugins/hparams/metadata.py", line 32, in <module>
    NULL_TENSOR = tensor_util.make_tensor_proto(
                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "SITE/tensorboard/util/tensor_util.py", line 405, in make_tensor_proto
    numpy_dtype = dtypes.as_dtype(nparray.dtype)
                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "SITE/tensorboard/compat/tensorflow_stub/dtypes.py", line 677, in as_dtype
    if type_value.type == np.string_ or type_value.type == np.unicode_:
                          ^^^^^^^^^^
  File "SITE/numpy/__init__.py", line 778, in __getattr__
    raise AttributeError(
AttributeError: `np.string_` was removed in the NumPy 2.0 release. Use `np.bytes_` instead.
"""

MAIN_LIB = """\
Traceback (most recent call last):
  File "LAUNCH", line 132, in <module>
    main(sys.argv[1:])
  File "LAUNCH", line 63, in main
    from tensorboard import main_lib
ImportError: cannot import name 'main_lib' from 'tensorboard' (SITE/tensorboard/__init__.py)
"""

PKG_RESOURCES = """\
Traceback (most recent call last):
  File "LAUNCH", line 132, in <module>
    main(sys.argv[1:])
  File "LAUNCH", line 65, in main
    from tensorboard import default, program, version
  File "SITE/tensorboard/default.py", line 30, in <module>
    import pkg_resources
ModuleNotFoundError: No module named 'pkg_resources'
"""

NO_TENSORBOARD = """\
Traceback (most recent call last):
  File "LAUNCH", line 132, in <module>
    main(sys.argv[1:])
  File "LAUNCH", line 62, in main
    import tensorboard  # noqa: F401
ModuleNotFoundError: No module named 'tensorboard'
"""


def text(traceback: str, launch: str = "/home/you/.tensorboard-remote/0123456789abcdef/launch.py",
         site: str = "/home/you/venvs/tb/lib/python3.11/site-packages") -> str:
    """A traceback with real-looking paths."""
    return traceback.replace("LAUNCH", launch).replace("SITE", site)

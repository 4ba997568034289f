"""tensorboard-remote: watch a remote TensorBoard from your own browser.

``from tensorboard_remote import tb`` gives the task collection module; add
it to your own namespace with ``Collection(..., tb)`` or
``ns.add_collection(tb)``. In this repository the package is also ``tasks/``,
so plain ``invoke tb.start`` finds it.
"""

from invoke import Collection

from . import tb

__version__ = "0.1.0"

#: The root namespace that `invoke` loads from this repository.
ns = Collection(tb)

__all__ = ["tb", "ns", "__version__"]

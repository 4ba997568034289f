"""tensorboard-remote: watch a remote TensorBoard from your own browser.

``from tensorboard_remote import tb`` gives the task collection module; add
it to your own namespace with ``Collection(..., tb)`` or
``ns.add_collection(tb)``. In this repository the package is also ``tasks/``,
so plain ``invoke tb.start`` finds it.

Both are imported when first asked for (PEP 562): the session's watcher
(``python -m tensorboard_remote.watcher``) imports this package too, and
needs neither invoke nor the tasks (0.27 s of its 0.28 s import, measured).
"""

import importlib

__version__ = "0.1.0"

__all__ = ["tb", "ns", "__version__"]


def __getattr__(name: str):
    # import_module, not "from . import tb": that asks hasattr(package, "tb")
    # first, which comes back here.
    global ns
    if name == "tb":
        return importlib.import_module(f"{__name__}.tb")
    if name == "ns":
        from invoke import Collection

        #: The root namespace that `invoke` loads from this repository.
        ns = Collection(importlib.import_module(f"{__name__}.tb"))
        return ns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""`fab -H HOST tb.start|tb.check|tb.exit` in this repository.

Other projects compose the installed collection the same way:
``from tensorboard_remote import tb``.
"""

from invoke import Collection

from tasks import tb

ns = Collection(tb)

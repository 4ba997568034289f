"""A sample experiment fabfile that composes tensorboard-remote.

``fab -H gpu1 train`` launches training; ``fab -H gpu1 tb.start`` shows it.
Its own config (``fabric.yaml`` beside it and ``ns.configure``) overrides
our defaults; keys it does not set keep tensorboard-remote's defaults.
"""

from invoke import Collection, task

from tensorboard_remote import tb


@task(help={"epochs": "How many epochs to train.", "watch": "Start TensorBoard afterwards."})
def train(c, epochs=1, watch=False):
    """Pretend to launch training (a real one would c.run a job script)."""
    print(f"training on {getattr(c, 'host', 'localhost')} for {epochs} epoch(s)")
    if watch:
        tb.start(c)


ns = Collection(train, tb)
# Only one tb key: the other tb settings must fall back to our defaults.
ns.configure({"tb": {"start_timeout": 45}})

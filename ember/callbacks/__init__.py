"""``ember.callbacks``: the Callback base and the built-in callbacks."""

from ember.callbacks.callback import Callback

__all__ = ["Callback"]

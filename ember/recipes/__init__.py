"""``ember.recipes``: the command line (``ember-train``, ``ember-generate``), the packaged Hydra
configs and the reference models they train.

Hydra and OmegaConf are imported inside the functions that use them, so importing this package
(or anything below it) stays cheap; the console scripts live in ``train.py`` and
``generate.py``.
"""

CONFIG_MODULE = "ember.recipes.configs"

__all__ = ["CONFIG_MODULE"]

"""The packaged Hydra configs of ``ember-train`` (``initialize_config_module`` needs a module)."""

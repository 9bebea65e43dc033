"""Training from the notebook: Ray Train with DeepSpeed (``%%ray_train``, docs/training.md).

``config.py`` (pure) checks a run's options and makes its DeepSpeed config.
"""

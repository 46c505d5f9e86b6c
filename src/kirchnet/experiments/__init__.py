"""Experiments E1-E5 and single training runs from a :class:`~kirchnet.config.TrainConfig`.

Submodules are imported lazily so that ``kirchnet.experiments.run`` stays light.
"""

__all__ = ["run", "e1_gradient", "e2_training", "e3_insitu", "e4_partial", "e5_device", "reproduce",
           "io"]

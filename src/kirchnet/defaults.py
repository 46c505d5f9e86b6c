"""The one source of default hyperparameters.

The rule constructors (:mod:`kirchnet.rules`), the optimizers (:mod:`kirchnet.optim`),
:class:`~kirchnet.training.Trainer`, the TOML schema (:mod:`kirchnet.config`), the
scikit-learn estimators (:mod:`kirchnet.estimators`), the README table and the example
configs all read (or are tested against) the values here, so a rule name means the same
rule with the same parameters everywhere. The learning rate is called ``lr`` everywhere.

Measured (``adam``, ``lr`` 0.05, 40 epochs, batch 32, mean of 2 seeds; teacher-student on
a 60-node Delaunay network, Iris on a ``[11, 16, 3]`` crossbar, digits ``[131, 20, 10]``
with 400 training images and 8 epochs, diabetes / wine through the estimators with
3-fold cross-validation):

* the exact gradient: teacher-student test loss 8.4e-8, Iris 0.82, digits 0.86,
  diabetes R^2 0.487, wine 0.97;
* EP, centered, beta 0.1 (current or energy nudge): identical to the exact gradient on every
  task (the centered current nudge is exact in a linear network for any beta; the energy
  nudge has an O((beta K)^2) bias, K the output compliance ~ 1/g). Positive EP with beta 1
  loses Iris (0.73) and digits (0.19);
* CL (positive): eta 0.03 gives teacher-student 4e-8, Iris 0.83, digits 0.85, diabetes
  R^2 0.487; eta 0.1 loses digits (0.78) and eta 0.5 loses diabetes (R^2 0.29) and
  digits (0.16): the clamp pulls the outputs a fraction eta of the way to the targets, and
  the estimate is the gradient of the stiffness-weighted error only as eta -> 0;
* cross-entropy temperature (Iris / digits through the config, 40 / 8 epochs): 0.05 gives
  0.98 / 0.91, 0.1 0.97 / 0.89, 1.0 0.86 / 0.74 (output voltages stay below 1 V, so T = 1
  makes the logits nearly equal);
* SGD at lr 0.1 (the former TOML default) does not train Iris in 40 epochs (0.19); Adam at
  lr 0.01-0.1 reaches 0.80-0.83.
"""

from __future__ import annotations

#: optimizer name (``"sgd"``, ``"momentum"``, ``"adam"``) and base learning rate ``lr``
OPTIMIZER = "adam"
LR = 0.05
MOMENTUM = 0.9
#: passes over the training set and minibatch size
EPOCHS = 40
BATCH_SIZE = 32

#: Equilibrium Propagation / GEP: nudge strength, estimator variant, nudge kind
EP_BETA = 0.1
EP_VARIANT = "centered"
EP_NUDGE = "current"
#: Coupled learning and adjoint coupled learning: clamping strength and variant
CL_ETA = 0.03
CL_VARIANT = "positive"
#: finite-difference step
FD_EPS = 1e-6

#: cross-entropy temperature (logits ``o / temperature``; output voltages are below 1 V)
TEMPERATURE = 0.05

#: Trainer safety clip of the conductances and the saturation warning threshold: the fraction
#: of tunable edges at a conductance bound above which the Trainer warns. Measured: healthy
#: runs keep up to 18 % at a bound (Iris / digits crossbars: one edge of a +x / -x input pair
#: switches off), an unreachable target (random 40-node graph, targets 3x the inputs) 55 %.
CLIP = (1e-6, 1e6)
SATURATION_WARN_FRACTION = 0.25

#: rule names used by the TOML config, the estimators and :func:`kirchnet.rules.make_rule`
RULE_NAMES = ("analytical", "ep", "gep", "cl", "acl", "insitu", "finite_difference")


def table() -> dict[str, object]:
    """``{name: value}`` of every default (used by the README table and its test)."""
    return {k: v for k, v in globals().items() if k.isupper() and not k.startswith("_")}

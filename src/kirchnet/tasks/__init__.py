"""Learning tasks: datasets, input encoding, target patterns and terminal placement.

Every task is offline and deterministic given its ``seed``. A :class:`Task` holds
train/test arrays and builds the :class:`~kirchnet.Circuit` for a given network
(:meth:`Task.circuit`).

Input encoding (classification datasets)
    Each feature is scaled to ``[-1, 1]`` with the training set's minimum and maximum
    (digits: the fixed pixel range ``[0, 16]``), then multiplied by ``voltage``. With
    ``signed=True`` each input also gets a negated copy (``+v x`` and ``-v x`` on two
    input nodes, as in Scellier's deep resistive networks): a passive network then
    realises signed effective weights. With ``bias=True`` two constant inputs ``+v``
    and ``-v`` are added. Input column order: ``[+x, -x, +v, -v]``.

Targets and decision rule
    Regression tasks use the raw target voltages and the squared error. A class ``c``
    is encoded as the output pattern ``p_c = low + (high - low) e_c`` (target voltages
    at the output nodes) for the squared error, or as the integer label for the
    cross-entropy loss. The predicted class is ``argmax_k o_k`` (``decision="argmax"``)
    or the class of the nearest pattern ``argmin_c ||o - p_c||`` (``"nearest"``).

Terminal placement (:func:`place_terminals`)
    Inputs at one end of the network, outputs at the opposite end and the ground as
    far as possible from both; deterministic (see the function docstring).
"""

from .base import Task, place_terminals, scale_features, encode_inputs, class_patterns
from .datasets import allostery, digits, iris, make_task, teacher_student, TASKS
from .nonlinear import NONLINEAR_TASKS, circles, mnist, mnist5k, moons, read_idx, xor

__all__ = ["Task", "place_terminals", "scale_features", "encode_inputs", "class_patterns",
           "teacher_student", "iris", "digits", "allostery", "make_task", "TASKS"]
__all__ += ["xor", "moons", "circles", "mnist5k", "mnist", "read_idx", "NONLINEAR_TASKS"]

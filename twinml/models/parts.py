"""The parts of the sequence model that a model built on it uses: the hazard helpers, the torch
networks, the batch-to-tensor step and the thread guard. :class:`twinml.whatif.TreatmentResponseModel`
is made of them; they are public so that it (and a model of yours) need not reach into private modules.
"""

from ._hazard import (
    _mask_and_target as mask_and_target,
)
from ._hazard import (
    base_hazard_logits,
    curve_frame,
    hazard_targets,
    parse_label_columns,
    risk_curve,
)
from ._sequence_model import _tensors as tensors
from ._sequence_model import _torch_threads as torch_threads
from ._sequence_model import forecast_loss
from ._torch_modules import TreatmentResponseNet

__all__ = [
    "mask_and_target",
    "base_hazard_logits",
    "curve_frame",
    "hazard_targets",
    "parse_label_columns",
    "risk_curve",
    "tensors",
    "torch_threads",
    "forecast_loss",
    "TreatmentResponseNet",
]

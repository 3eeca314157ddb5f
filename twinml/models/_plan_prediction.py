"""Where objects pickled before the ``twinml.whatif`` package name PlanPrediction: it lives in
:mod:`twinml.whatif` now, and unpickling finds it here through this module's ``__getattr__``."""


def __getattr__(name):
    from .. import whatif

    return getattr(whatif, name)

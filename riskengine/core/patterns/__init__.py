"""The pattern registry: one module per pattern, each exporting ``DETECTOR``.

Adding a pattern is adding one module here that defines a :class:`~.base.Detector` subclass and
``DETECTOR = ThatClass()``: the registry imports every module of this package except the shared
ones (:data:`SHARED_MODULES`) at import time and registers its detector under its
:class:`~riskengine.core.models.PatternType`.
Detectors run in the contract's PatternType order, so outputs do not depend on file names.

The evaluation runs every registered detector whose pattern is not in the rules'
``patterns.disabled``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType

from ..native import use_compiled

use_compiled(__path__, "patterns")  # before any other module of the package is imported

from ..models import PATTERN_ORDER, PatternType
from .base import Detector, Match, OrderContext, OrderFlowDetector, TradeContext, WindowedDetector

#: Modules of this package that hold shared code, not a pattern.
SHARED_MODULES = frozenset({"base", "order_flow"})


def _discover() -> dict[PatternType, Detector]:
    found: dict[PatternType, Detector] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name in SHARED_MODULES:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        detector = getattr(module, "DETECTOR", None)
        if not isinstance(detector, Detector):
            raise TypeError(f"pattern module {module.__name__} must define DETECTOR = <Detector instance>")
        if detector.pattern in found:
            raise TypeError(f"pattern {detector.pattern} is defined twice (module {module.__name__})")
        found[detector.pattern] = detector
    return dict(sorted(found.items(), key=lambda item: PATTERN_ORDER[item[0]]))


#: Every registered detector by pattern, in PatternType order.
REGISTRY: Mapping[PatternType, Detector] = MappingProxyType(_discover())

__all__ = [
    "REGISTRY",
    "Detector",
    "Match",
    "OrderContext",
    "OrderFlowDetector",
    "TradeContext",
    "WindowedDetector",
]

"""The pure detection core: no Faust, no Kafka, no I/O, no clock.

``evaluate_trade(state, trade, reference, rules) -> Evaluation(state, analyzed, alerts)`` scores
one trade against the user's state; everything else here is the data it works on. The Faust
agents, ``riskengine replay``, ``riskengine bench core`` and the property tests all call it, so
they agree on every result. Semantics: :mod:`riskengine.core.evaluate` (event time, suppression,
alert ids), :mod:`riskengine.core.state` (bounds, encoding), :mod:`riskengine.core.rules`
(parameters), :mod:`riskengine.core.scoring` (score, level, actions), and one module per pattern
in :mod:`riskengine.core.patterns`. :data:`BUILD` says whether the modules run compiled
(:mod:`riskengine.core.native`).
"""

from .native import BUILD, CoreBuild, use_compiled

use_compiled(__path__)  # before any other module of the package is imported

from .evaluate import Evaluation, OrderEvaluation, evaluate_many, evaluate_order, evaluate_trade
from .event_reader import read_order_event, read_trade
from .models import (
    AccountType,
    BehavioralAnalysis,
    ComplianceFlag,
    Feature,
    InvalidOrderEvent,
    InvalidProfile,
    InvalidTrade,
    MarketImpactAnalysis,
    MitigationAction,
    OrderActivity,
    OrderEvent,
    OrderEventType,
    PatternType,
    RiskAlert,
    RiskAnalyzedTrade,
    RiskLevel,
    ScoreBreakdown,
    Severity,
    Side,
    Trade,
    UserProfile,
    VolumeAnalysis,
    ahead_of_clock,
    alert_id,
    parse_order_event,
    parse_profile,
    parse_trade,
)
from .order_book import OrderBook
from .patterns import REGISTRY, Detector, Match, TradeContext, WindowedDetector
from .reference import EMPTY_REFERENCE, InvalidReference, MarketReference, ReferenceData
from .rules import DEFAULT_RULES, PARAMETERS, InvalidRule, Rules
from .state import FORMAT_VERSION, MIGRATIONS, StateFormatError, UserState, decode_state, encode_state

__all__ = [
    "BUILD",
    "DEFAULT_RULES",
    "EMPTY_REFERENCE",
    "FORMAT_VERSION",
    "MIGRATIONS",
    "PARAMETERS",
    "REGISTRY",
    "AccountType",
    "BehavioralAnalysis",
    "ComplianceFlag",
    "CoreBuild",
    "Detector",
    "Evaluation",
    "Feature",
    "InvalidOrderEvent",
    "InvalidProfile",
    "InvalidReference",
    "InvalidRule",
    "InvalidTrade",
    "MarketImpactAnalysis",
    "MarketReference",
    "Match",
    "MitigationAction",
    "OrderActivity",
    "OrderBook",
    "OrderEvaluation",
    "OrderEvent",
    "OrderEventType",
    "PatternType",
    "ReferenceData",
    "RiskAlert",
    "RiskAnalyzedTrade",
    "RiskLevel",
    "Rules",
    "ScoreBreakdown",
    "Severity",
    "Side",
    "StateFormatError",
    "Trade",
    "TradeContext",
    "UserProfile",
    "UserState",
    "VolumeAnalysis",
    "WindowedDetector",
    "ahead_of_clock",
    "alert_id",
    "decode_state",
    "encode_state",
    "evaluate_many",
    "evaluate_order",
    "evaluate_trade",
    "parse_order_event",
    "parse_profile",
    "parse_trade",
    "read_order_event",
    "read_trade",
]

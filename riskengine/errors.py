"""The one exception root, its two outcomes, and a base class per subsystem.

Every exception riskengine raises on purpose is a :class:`RiskEngineError`. Two branches say what
the worker does with it; they never meet (no class is both):

- :class:`EventRejected`: one input event cannot be processed (it does not decode, breaks the
  contract, or the core fails on it). Its original bytes go to the input's dead-letter topic with
  :attr:`EventRejected.reason` in the headers; the worker counts it and goes on.
- :class:`FatalError`: the worker (or the command) cannot go on: a bad topic layout, outputs the
  broker would not acknowledge, a registry that refuses the contracts. Nothing in flight is acked,
  so whoever owns the partitions next processes it again.

Errors in neither branch are the caller's to judge (a rules message that does not validate is
logged and ignored by the worker, the same error from ``--rules FILE`` ends ``riskengine replay``).

The subsystem bases (:class:`CoreError`, :class:`ContractError`, :class:`WorkerError`,
:class:`SearchError`, :class:`ProducerError`, :class:`CommandError`) let a caller catch "anything
this subsystem reports"; the concrete classes live in the module that raises them. This module
imports nothing, so the pure core may use it.
"""

from __future__ import annotations


class RiskEngineError(Exception):
    """Root of every exception riskengine raises on purpose."""


# -- outcomes ---------------------------------------------------------------------------------


class EventRejected(RiskEngineError):
    """One event cannot be processed: it goes to the dead-letter topic and the worker goes on.

    ``reason`` is short and stable (it becomes the ``reason`` header and a metrics label).
    """

    reason = "rejected"


class FatalError(RiskEngineError):
    """The worker or command cannot go on; nothing in flight is acknowledged."""


# -- subsystems -------------------------------------------------------------------------------


class SettingsError(RiskEngineError, ValueError):
    """A setting has a value the engine cannot use; the message names the variable."""


class CoreError(RiskEngineError, ValueError):
    """The detection core refuses an input: a trade, profile, rule, reference document or state."""


class ContractError(RiskEngineError):
    """Avro contracts, the schema registry and the topics' layout."""


class WorkerError(RiskEngineError):
    """The Faust worker: its state table, delivery, snapshots and web views."""


class SearchError(RiskEngineError):
    """Elasticsearch, the sink connector's deployment and the reporting views."""


class ProducerError(RiskEngineError):
    """The trade simulator and its REST API."""


class CommandError(RiskEngineError):
    """A ``riskengine`` command cannot run as asked (an unreadable file, for instance)."""

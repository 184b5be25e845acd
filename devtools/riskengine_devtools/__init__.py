"""riskengine's development tooling: the local service stack, the demo and the benchmarks.

A separate distribution (``riskengine-devtools``, installed by ``make install``) so that a
production install of the engine carries no Maven, Go or JVM supervision code. Its commands join
the ``riskengine`` command through the ``riskengine.commands`` entry points:
``riskengine stack up|down|status``, ``riskengine demo``, ``riskengine bench core`` and
``riskengine bench-e2e``.
"""

from riskengine.errors import RiskEngineError


class DevtoolsError(RiskEngineError):
    """The development tooling failed: a stack service, a demo step, a benchmark stage."""

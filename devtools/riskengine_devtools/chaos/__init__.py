"""The chaos suite (``riskengine chaos``, ``make chaos``): faults under steady load, nothing lost.

* :mod:`~riskengine_devtools.chaos.flow`: the generated input and the one-process reference run;
* :mod:`~riskengine_devtools.chaos.load`: producing it at a steady rate, poison mixed in on demand;
* :mod:`~riskengine_devtools.chaos.workers`: worker processes (shared with the integration tests);
* :mod:`~riskengine_devtools.chaos.kafka_io`: reading topics back;
* :mod:`~riskengine_devtools.chaos.verifier`: the pure decisions (delivered, lost, duplicated, mismatch);
* :mod:`~riskengine_devtools.chaos.scenarios`: the supervisor, the faults, the scenarios, the runner.
"""

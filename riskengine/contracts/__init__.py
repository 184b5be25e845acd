"""The engine's contracts with the outside: Avro schemas, topics, and the registry's wire format.

- ``schemas/``: one ``.avsc`` file per type (:mod:`.schema_files` loads and expands them);
- :mod:`.topics`: every topic's name, layout and creation; which contract travels on which topic;
- :mod:`.avro_codec`: the Confluent wire format through a schema registry (decode errors are
  typed, for the dead-letter headers);
- :mod:`.reference_record`: the versioned ``RiskReference`` record (sanctions, countries,
  markets) to and from the core's reference data, validated by the core.
"""

"""Search and reporting over Elasticsearch: index templates, the sink connector's deployment, queries.

- :mod:`.index_templates`: explicit mappings of the two searchable topics' documents;
- :mod:`.sink_connector`: deploying riskengine's Elasticsearch sink on Kafka Connect;
- :mod:`.reporting`: the reporting views (alert search, user history, top users, counts, market).
"""

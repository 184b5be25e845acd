"""riskengine: real-time trade risk and market-abuse surveillance on Kafka and Faust."""

__version__ = "0.1.0"

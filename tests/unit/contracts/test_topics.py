"""Which contract travels on which topic, under which registry subject."""

from riskengine.contracts.schema_files import parsed_schema
from riskengine.contracts.topics import RECORD_TOPICS, TOPICS, value_subject


def test_every_contract_travels_on_an_engine_topic_under_its_value_subject():
    assert set(RECORD_TOPICS.values()) <= set(TOPICS.all())
    assert value_subject(TOPICS.trades) == "crypto-trades-value"
    assert parsed_schema("CryptoTrade") is parsed_schema("CryptoTrade")

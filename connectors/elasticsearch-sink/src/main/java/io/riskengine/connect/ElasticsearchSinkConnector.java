package io.riskengine.connect;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Indexes records of Kafka topics into Elasticsearch, one index per topic (named like the topic,
 * lower-cased), with the document {@code _id} taken from a record field ({@code id.fields}) so
 * re-delivered and re-processed records replace their document instead of duplicating it.
 *
 * <p>Values must be schemaless maps (from {@link RegistryAvroConverter}, or Connect's
 * {@code JsonConverter} with {@code schemas.enable=false}) or JSON text. See
 * {@link ElasticsearchSinkTask} for delivery guarantees.
 */
public class ElasticsearchSinkConnector extends SinkConnector {
    private static final Logger log = LoggerFactory.getLogger(ElasticsearchSinkConnector.class);
    private Map<String, String> props;

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        ElasticsearchSinkConfig config = new ElasticsearchSinkConfig(props); // fails fast on a bad value
        this.props = Map.copyOf(props);
        log.info("Elasticsearch sink {} for {} (document ids: {})", Version.get(), config.url, config.idFields);
    }

    @Override
    public Class<? extends Task> taskClass() {
        return ElasticsearchSinkTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        // Every task gets the same settings; Connect spreads the topic partitions over them.
        List<Map<String, String>> configs = new ArrayList<>(maxTasks);
        for (int i = 0; i < maxTasks; i++) {
            configs.add(props);
        }
        return configs;
    }

    @Override
    public void stop() {
        // Nothing held: the tasks own their HTTP clients.
    }

    @Override
    public ConfigDef config() {
        return ElasticsearchSinkConfig.CONFIG;
    }
}

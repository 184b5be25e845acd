package io.riskengine.connect;

import java.net.URI;
import java.util.Locale;
import java.util.Map;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.common.config.ConfigException;

/** The sink's settings, validated when Connect receives the connector config. */
final class ElasticsearchSinkConfig extends AbstractConfig {
    static final String CONNECTION_URL = "connection.url";
    static final String CONNECTION_USERNAME = "connection.username";
    static final String CONNECTION_PASSWORD = "connection.password";
    static final String ID_FIELDS = "id.fields";
    static final String BATCH_SIZE = "batch.size";
    static final String RETRY_BACKOFF_MS = "retry.backoff.ms";
    static final String CONNECTION_TIMEOUT_MS = "connection.timeout.ms";
    static final String REQUEST_TIMEOUT_MS = "request.timeout.ms";
    static final String BEHAVIOR_ON_DOCUMENT_ERROR = "behavior.on.document.error";
    static final String LOG_EVERY_MS = "log.summary.interval.ms";

    /** What a document Elasticsearch rejects (a 4xx item: mapping conflict, bad value) does. */
    enum DocumentErrorBehavior {
        /** Log it, count it, hand it to Connect's errant-record reporter (DLQ) if any; go on. */
        LOG,
        /** Fail the task: nothing after it is indexed until the connector is fixed and restarted. */
        FAIL
    }

    static final ConfigDef CONFIG = new ConfigDef()
            .define(CONNECTION_URL, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, Importance.HIGH,
                    "Elasticsearch base URL, e.g. http://127.0.0.1:9200")
            .define(CONNECTION_USERNAME, Type.STRING, "", Importance.MEDIUM,
                    "Basic-auth user name (empty: no authentication)")
            .define(CONNECTION_PASSWORD, Type.PASSWORD, "", Importance.MEDIUM, "Basic-auth password")
            .define(ID_FIELDS, Type.LIST, "", Importance.HIGH,
                    "topic-prefix:field.path pairs: the record field that is the document _id (so a "
                            + "re-delivered record replaces its document). Topics without a rule use "
                            + "topic+partition+offset.")
            .define(BATCH_SIZE, Type.INT, 500, ConfigDef.Range.between(1, 10_000), Importance.MEDIUM,
                    "Most documents in one _bulk request")
            .define(RETRY_BACKOFF_MS, Type.LONG, 1000L, ConfigDef.Range.atLeast(10), Importance.MEDIUM,
                    "Wait before Connect re-delivers a batch Elasticsearch could not take (down, 429, 5xx)")
            .define(CONNECTION_TIMEOUT_MS, Type.INT, 5000, ConfigDef.Range.atLeast(1), Importance.LOW,
                    "TCP connect timeout, ms")
            .define(REQUEST_TIMEOUT_MS, Type.INT, 30_000, ConfigDef.Range.atLeast(1), Importance.LOW,
                    "Timeout of one _bulk request, ms")
            .define(BEHAVIOR_ON_DOCUMENT_ERROR, Type.STRING, "log",
                    ConfigDef.CaseInsensitiveValidString.in("log", "fail"), Importance.MEDIUM,
                    "log: a rejected document is logged, counted and reported to the errant-record "
                            + "reporter (DLQ) if configured; fail: the task fails")
            .define(LOG_EVERY_MS, Type.LONG, 60_000L, ConfigDef.Range.atLeast(1000), Importance.LOW,
                    "Interval of the task's progress summary in the log, ms");

    final URI url;
    final IdFields idFields;

    ElasticsearchSinkConfig(Map<String, String> props) {
        super(CONFIG, props);
        String text = getString(CONNECTION_URL).trim();
        URI parsed;
        try {
            parsed = URI.create(text.endsWith("/") ? text.substring(0, text.length() - 1) : text);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(CONNECTION_URL, text, e.getMessage());
        }
        if (!("http".equals(parsed.getScheme()) || "https".equals(parsed.getScheme())) || parsed.getHost() == null) {
            throw new ConfigException(CONNECTION_URL, text, "must be an http(s) URL such as http://127.0.0.1:9200");
        }
        url = parsed;
        idFields = IdFields.parse(ID_FIELDS, getList(ID_FIELDS));
    }

    DocumentErrorBehavior documentErrorBehavior() {
        return DocumentErrorBehavior.valueOf(getString(BEHAVIOR_ON_DOCUMENT_ERROR).toUpperCase(Locale.ROOT));
    }
}

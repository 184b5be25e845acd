package io.riskengine.connect;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.ErrantRecordReporter;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes each batch Connect hands to {@link #put} as {@code _bulk} {@code index} actions.
 *
 * <p>Delivery: at least once, and idempotent. {@code put} returns only after Elasticsearch took
 * every document of the batch, so by the time Connect commits the consumer offsets (after
 * {@link #preCommit}) everything before them is indexed. Documents have deterministic ids (the
 * record's id field), so a batch delivered twice, or an alert re-processed upstream, replaces its
 * documents instead of duplicating them.
 *
 * <p>Elasticsearch unavailable (unreachable, timeout, 429, 5xx, or a 429/5xx item): {@code put}
 * throws {@link RetriableException} after asking Connect to wait {@code retry.backoff.ms}; Connect
 * pauses the partitions and re-delivers the same batch, for as long as the outage lasts. Nothing
 * upstream notices (the engine's workers never wait for the index), and the task catches up from
 * its committed offsets when Elasticsearch is back.
 *
 * <p>A document Elasticsearch rejects (4xx item: mapping conflict, unparsable value) or a record
 * without its id field is a document error: see {@code behavior.on.document.error}.
 */
public class ElasticsearchSinkTask extends SinkTask {
    private static final Logger log = LoggerFactory.getLogger(ElasticsearchSinkTask.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    private ElasticsearchSinkConfig config;
    private BulkClient client;
    private ErrantRecordReporter reporter;
    private int batchSize;
    private long retryBackoffMs;
    private long logEveryMs;

    // Progress, for the periodic summary and the outage messages.
    private long indexed;
    private long documentErrors;
    private long skipped;
    private long retries;
    private long failingSince = -1;
    private int failedAttempts;
    private long lastSummary;
    private long indexedAtLastSummary;

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        config = new ElasticsearchSinkConfig(props);
        client = new BulkClient(
                config.url,
                config.getString(ElasticsearchSinkConfig.CONNECTION_USERNAME),
                config.getPassword(ElasticsearchSinkConfig.CONNECTION_PASSWORD).value(),
                Duration.ofMillis(config.getInt(ElasticsearchSinkConfig.CONNECTION_TIMEOUT_MS)),
                Duration.ofMillis(config.getInt(ElasticsearchSinkConfig.REQUEST_TIMEOUT_MS)));
        batchSize = config.getInt(ElasticsearchSinkConfig.BATCH_SIZE);
        retryBackoffMs = config.getLong(ElasticsearchSinkConfig.RETRY_BACKOFF_MS);
        logEveryMs = config.getLong(ElasticsearchSinkConfig.LOG_EVERY_MS);
        try {
            reporter = context.errantRecordReporter();
        } catch (NoSuchMethodError | NoClassDefFoundError e) {
            reporter = null; // a Connect runtime older than 2.6
        }
        lastSummary = System.currentTimeMillis();
        log.info("Indexing into Elasticsearch at {} (document ids: {}; batches of at most {}; document errors: {}{})",
                config.url, config.idFields, batchSize, config.documentErrorBehavior(),
                reporter != null ? ", reported to Connect's errant-record reporter" : "");
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        if (records.isEmpty()) {
            summarize();
            return;
        }
        List<SinkRecord> sources = new ArrayList<>(records.size());
        List<BulkClient.Action> actions = new ArrayList<>(records.size());
        for (SinkRecord record : records) {
            if (record.value() == null) {
                skipped++; // a tombstone: our topics have none, and there is no id to delete by
                continue;
            }
            try {
                actions.add(action(record));
                sources.add(record);
            } catch (DataException e) {
                documentError(record, e.getMessage(), e);
            }
        }
        for (int start = 0; start < actions.size(); start += batchSize) {
            int end = Math.min(start + batchSize, actions.size());
            send(sources.subList(start, end), actions.subList(start, end));
        }
        summarize();
    }

    private BulkClient.Action action(SinkRecord record) {
        Map<?, ?> document = document(record);
        IdFields.Rule rule = config.idFields.ruleFor(record.topic());
        String id;
        if (rule == null) {
            id = record.topic() + "+" + record.kafkaPartition() + "+" + record.kafkaOffset();
        } else {
            id = IdFields.idOf(rule, document);
            if (id == null) {
                throw new DataException("the record has no value at its id field " + rule.field());
            }
        }
        try {
            return new BulkClient.Action(record.topic().toLowerCase(Locale.ROOT), id, JSON.writeValueAsBytes(document));
        } catch (JsonProcessingException e) {
            throw new DataException("the value does not serialize as JSON: " + e.getOriginalMessage(), e);
        }
    }

    private static Map<?, ?> document(SinkRecord record) {
        Object value = record.value();
        if (value instanceof Map<?, ?> map) {
            return map;
        }
        if (value instanceof String text) {
            try {
                Object parsed = JSON.readValue(text, Object.class);
                if (parsed instanceof Map<?, ?> map) {
                    return map;
                }
            } catch (JsonProcessingException e) {
                throw new DataException("the value is not JSON: " + e.getOriginalMessage(), e);
            }
        }
        throw new DataException("the value is a " + value.getClass().getSimpleName()
                + ", not a schemaless map or a JSON object (use RegistryAvroConverter or JsonConverter"
                + " with schemas.enable=false)");
    }

    private void send(List<SinkRecord> records, List<BulkClient.Action> actions) {
        List<BulkClient.ItemError> errors;
        try {
            errors = client.bulk(actions);
        } catch (BulkClient.UnavailableException e) {
            throw retry(actions.size(), e.getMessage(), e);
        } catch (BulkClient.RejectedException e) {
            throw new ConnectException(e.getMessage() + " (check connection.url, connection.username/password)");
        }
        int rejected = 0;
        for (BulkClient.ItemError error : errors) {
            if (error.retriable()) {
                // Re-send the whole chunk: documents already indexed are replaced by the same ones.
                throw retry(actions.size(), String.format("document %s answered %d %s: %s",
                        actions.get(error.position()).id(), error.status(), error.type(), error.reason()), null);
            }
        }
        for (BulkClient.ItemError error : errors) {
            BulkClient.Action action = actions.get(error.position());
            rejected++;
            documentError(records.get(error.position()), String.format("index %s refused document %s (%d %s): %s",
                    action.index(), action.id(), error.status(), error.type(), error.reason()), null);
        }
        indexed += actions.size() - rejected;
        if (failingSince >= 0) {
            log.info("Elasticsearch at {} is back after {} s and {} retried batches; indexing resumed",
                    config.url, (System.currentTimeMillis() - failingSince) / 1000, failedAttempts);
            failingSince = -1;
            failedAttempts = 0;
        }
    }

    private RetriableException retry(int size, String reason, Throwable cause) {
        retries++;
        failedAttempts++;
        long now = System.currentTimeMillis();
        if (failingSince < 0) {
            failingSince = now;
        }
        // Without a timeout Connect would re-deliver only at the next offset commit (a minute).
        context.timeout(retryBackoffMs);
        // First failure and then one line a minute: an outage of hours must not flood the log.
        if (failedAttempts == 1 || failedAttempts % Math.max(1, 60_000 / retryBackoffMs) == 0) {
            log.warn("Elasticsearch cannot take a batch of {} documents ({}); retry {} in {} ms, failing for {} s",
                    size, reason, failedAttempts, retryBackoffMs, (now - failingSince) / 1000);
        }
        return new RetriableException("Elasticsearch unavailable: " + reason, cause);
    }

    private void documentError(SinkRecord record, String reason, Throwable cause) {
        documentErrors++;
        String where = String.format("topic %s partition %d offset %d", record.topic(), record.kafkaPartition(),
                record.kafkaOffset());
        if (config.documentErrorBehavior() == ElasticsearchSinkConfig.DocumentErrorBehavior.FAIL) {
            throw new ConnectException("document error at " + where + ": " + reason
                    + " (behavior.on.document.error=fail)", cause);
        }
        log.warn("Skipped the record at {}: {}", where, reason);
        if (reporter != null) {
            // Connect's errors.* settings decide: log, dead-letter topic, or fail (errors.tolerance=none).
            reporter.report(record, cause != null ? cause : new DataException(reason));
        }
    }

    private void summarize() {
        long now = System.currentTimeMillis();
        if (now - lastSummary < logEveryMs) {
            return;
        }
        log.info("Indexed {} documents in the last {} s ({} in total; {} document errors, {} tombstones skipped, "
                        + "{} retried batches)",
                indexed - indexedAtLastSummary, (now - lastSummary) / 1000, indexed, documentErrors, skipped, retries);
        lastSummary = now;
        indexedAtLastSummary = indexed;
    }

    @Override
    public void flush(Map<TopicPartition, OffsetAndMetadata> currentOffsets) {
        // Nothing is buffered: put() returns only once Elasticsearch took the whole batch, so every
        // offset Connect is about to commit is already indexed.
    }

    @Override
    public void stop() {
        if (config != null) {
            log.info("Stopping: {} documents indexed, {} document errors, {} retried batches",
                    indexed, documentErrors, retries);
        }
    }
}

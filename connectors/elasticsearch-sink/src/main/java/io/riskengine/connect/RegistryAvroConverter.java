package io.riskengine.connect;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.SchemaParseException;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.types.Password;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads Confluent wire format (magic byte 0, a 4-byte big-endian schema id, the Avro binary body)
 * with writer schemas from any registry speaking the Confluent REST API, and returns schemaless
 * values: a {@code Map} tree (see {@link AvroValues}). Sink only.
 *
 * <p>Configuration (prefixed {@code value.converter.} in a connector's config):
 * {@code schema.registry.url} (required; e.g. Apicurio's {@code http://host:8081/apis/ccompat/v7}),
 * {@code schema.registry.username} and {@code schema.registry.password} (basic auth, optional),
 * {@code schema.registry.timeout.ms} (default 10000).
 *
 * <p>Failures: bytes that are not the wire format, a schema id the registry does not know, or a
 * body that does not decode with its schema raise {@link DataException} (Connect's
 * {@code errors.tolerance} decides: fail the task, or log/dead-letter the record and go on). A
 * registry that cannot be reached or answers 5xx raises {@link RetriableException}, which
 * Connect retries for {@code errors.retry.timeout}: a registry outage pauses indexing instead of
 * dropping records.
 */
public class RegistryAvroConverter implements Converter {
    public static final String URL_CONFIG = "schema.registry.url";
    public static final String USERNAME_CONFIG = "schema.registry.username";
    public static final String PASSWORD_CONFIG = "schema.registry.password";
    public static final String TIMEOUT_CONFIG = "schema.registry.timeout.ms";

    private static final Logger log = LoggerFactory.getLogger(RegistryAvroConverter.class);
    private static final byte MAGIC = 0;
    private static final int HEADER = 5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private static final ConfigDef CONFIG = new ConfigDef()
            .define(URL_CONFIG, ConfigDef.Type.STRING, ConfigDef.NO_DEFAULT_VALUE,
                    ConfigDef.Importance.HIGH, "Base URL of the Confluent-compatible schema registry")
            .define(USERNAME_CONFIG, ConfigDef.Type.STRING, "",
                    ConfigDef.Importance.MEDIUM, "Registry basic-auth user name (empty: no auth)")
            .define(PASSWORD_CONFIG, ConfigDef.Type.PASSWORD, "",
                    ConfigDef.Importance.MEDIUM, "Registry basic-auth password")
            .define(TIMEOUT_CONFIG, ConfigDef.Type.LONG, 10_000L, ConfigDef.Range.atLeast(1),
                    ConfigDef.Importance.LOW, "Timeout of one registry request, ms");

    /** Writer schema id -> its reader; each id is fetched once (ids are immutable in the registry). */
    private final Map<Integer, GenericDatumReader<Object>> readers = new HashMap<>();
    private String registryUrl;
    private String authorization;
    private Duration timeout;
    private HttpClient http;
    private BinaryDecoder decoder;

    @Override
    public ConfigDef config() {
        return CONFIG;
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        Map<String, Object> parsed = CONFIG.parse(configs);
        String url = ((String) parsed.get(URL_CONFIG)).trim();
        if (url.isEmpty()) {
            throw new ConfigException(URL_CONFIG, url, "must be the registry's base URL");
        }
        registryUrl = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
        String username = (String) parsed.get(USERNAME_CONFIG);
        String password = ((Password) parsed.get(PASSWORD_CONFIG)).value();
        authorization = username.isEmpty()
                ? null
                : "Basic " + Base64.getEncoder().encodeToString(
                        (username + ":" + password).getBytes(StandardCharsets.UTF_8));
        timeout = Duration.ofMillis((Long) parsed.get(TIMEOUT_CONFIG));
        http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(timeout).build();
        log.info("Reading Avro {}s with writer schemas from {}", isKey ? "key" : "value", registryUrl);
    }

    @Override
    public byte[] fromConnectData(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
        throw new UnsupportedOperationException(
                "RegistryAvroConverter only reads (sink connectors); it does not write Avro");
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] value) {
        if (value == null) {
            return SchemaAndValue.NULL;
        }
        if (value.length < HEADER || value[0] != MAGIC) {
            throw new DataException(String.format(
                    "record of topic %s is not in the registry's wire format (%d bytes, first byte %s)",
                    topic, value.length, value.length == 0 ? "none" : Integer.toString(value[0] & 0xff)));
        }
        int id = ByteBuffer.wrap(value, 1, 4).getInt();
        GenericDatumReader<Object> reader = reader(id);
        try {
            decoder = DecoderFactory.get().binaryDecoder(value, HEADER, value.length - HEADER, decoder);
            Object datum = reader.read(null, decoder);
            if (!decoder.isEnd()) {
                throw new DataException(String.format(
                        "record of topic %s has bytes left after its Avro body (schema id %d)", topic, id));
            }
            return new SchemaAndValue(null, AvroValues.toPlain(datum));
        } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException e) {
            throw new DataException(String.format(
                    "record of topic %s does not decode with schema id %d: %s", topic, id, e), e);
        }
    }

    private GenericDatumReader<Object> reader(int id) {
        GenericDatumReader<Object> reader = readers.get(id);
        if (reader == null) {
            reader = new GenericDatumReader<>(fetchSchema(id));
            readers.put(id, reader);
        }
        return reader;
    }

    private Schema fetchSchema(int id) {
        URI uri = URI.create(registryUrl + "/schemas/ids/" + id);
        HttpRequest.Builder request = HttpRequest.newBuilder(uri).timeout(timeout).GET()
                .header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if (authorization != null) {
            request.header("Authorization", authorization);
        }
        HttpResponse<String> response;
        try {
            response = http.send(request.build(), HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new RetriableException("schema registry at " + registryUrl + " is unreachable: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RetriableException("interrupted while fetching schema id " + id, e);
        }
        int status = response.statusCode();
        if (status == 404) {
            throw new DataException("schema id " + id + " is unknown to the registry at " + registryUrl);
        }
        if (status == 429 || status >= 500) {
            throw new RetriableException(String.format(
                    "schema registry at %s answered %d for schema id %d", registryUrl, status, id));
        }
        if (status != 200) {
            throw new DataException(String.format("schema registry at %s answered %d for schema id %d: %s",
                    registryUrl, status, id, response.body()));
        }
        try {
            JsonNode body = JSON.readTree(response.body());
            String type = body.path("schemaType").asText("AVRO");
            if (!"AVRO".equals(type)) {
                throw new DataException("schema id " + id + " is a " + type + " schema, not Avro");
            }
            Schema schema = new Schema.Parser().parse(body.path("schema").asText());
            log.info("Loaded writer schema id {} ({}) from {}", id, schema.getFullName(), registryUrl);
            return schema;
        } catch (IOException | SchemaParseException e) {
            throw new DataException("schema id " + id + " from " + registryUrl + " is not an Avro schema: " + e, e);
        }
    }
}

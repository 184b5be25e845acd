package io.riskengine.connect;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * Elasticsearch's {@code _bulk} API over the JDK's HTTP client: no client library, so the plugin
 * carries nothing that could clash with the Connect runtime's jars.
 */
final class BulkClient {
    /** One {@code index} action: create or replace the document {@code id} in {@code index}. */
    record Action(String index, String id, byte[] source) {}

    /** A failed item of a bulk response, by its position in the request. */
    record ItemError(int position, int status, String type, String reason) {
        /** Elasticsearch asks to retry (429) or failed on its side (5xx): the same item may pass later. */
        boolean retriable() {
            return status == 429 || status >= 500;
        }
    }

    /** Elasticsearch could not take the request at all: unreachable, timed out, 429 or 5xx. */
    static final class UnavailableException extends Exception {
        private static final long serialVersionUID = 1L;

        UnavailableException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** Elasticsearch refused the request for a reason retrying will not cure (401, 403, 400...). */
    static final class RejectedException extends Exception {
        private static final long serialVersionUID = 1L;

        RejectedException(String message) {
            super(message);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final byte[] NEWLINE = {'\n'};
    /** Only what the task reads: keeps the response small for large batches. */
    private static final String FILTER = "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

    private final URI bulkUri;
    private final String authorization;
    private final Duration requestTimeout;
    private final HttpClient http;

    BulkClient(URI base, String username, String password, Duration connectTimeout, Duration requestTimeout) {
        this.bulkUri = URI.create(base + "/_bulk?" + FILTER);
        this.authorization = username.isEmpty()
                ? null
                : "Basic " + Base64.getEncoder().encodeToString(
                        (username + ":" + password).getBytes(StandardCharsets.UTF_8));
        this.requestTimeout = requestTimeout;
        // HTTP/1.1: Elasticsearch does not speak h2c, and the upgrade attempt only costs a round trip.
        this.http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(connectTimeout).build();
    }

    /** Sends {@code actions} as one request; returns the items Elasticsearch refused (empty: all indexed). */
    List<ItemError> bulk(List<Action> actions) throws UnavailableException, RejectedException {
        HttpRequest.Builder request = HttpRequest.newBuilder(bulkUri)
                .timeout(requestTimeout)
                .header("Content-Type", "application/x-ndjson")
                .POST(HttpRequest.BodyPublishers.ofByteArray(body(actions)));
        if (authorization != null) {
            request.header("Authorization", authorization);
        }
        HttpResponse<byte[]> response;
        try {
            response = http.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
        } catch (IOException e) {
            throw new UnavailableException("Elasticsearch at " + bulkUri.getHost() + ":" + bulkUri.getPort()
                    + " is unreachable: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new UnavailableException("interrupted while indexing", e);
        }
        int status = response.statusCode();
        String text = new String(response.body(), StandardCharsets.UTF_8);
        if (status == 429 || status >= 500) {
            throw new UnavailableException("Elasticsearch answered " + status + ": " + shorten(text), null);
        }
        if (status != 200) {
            throw new RejectedException("Elasticsearch refused the bulk request (" + status + "): " + shorten(text));
        }
        return itemErrors(text);
    }

    private static byte[] body(List<Action> actions) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(actions.size() * 512);
        for (Action action : actions) {
            ObjectNode meta = JSON.createObjectNode();
            meta.putObject("index").put("_index", action.index()).put("_id", action.id());
            out.writeBytes(meta.toString().getBytes(StandardCharsets.UTF_8));
            out.writeBytes(NEWLINE);
            out.writeBytes(action.source());
            out.writeBytes(NEWLINE);
        }
        return out.toByteArray();
    }

    private static List<ItemError> itemErrors(String text) throws RejectedException {
        JsonNode response;
        try {
            response = JSON.readTree(text);
        } catch (IOException e) {
            throw new RejectedException("unreadable bulk response: " + shorten(text));
        }
        List<ItemError> errors = new ArrayList<>();
        if (!response.path("errors").asBoolean(false)) {
            return errors;
        }
        JsonNode items = response.path("items");
        for (int i = 0; i < items.size(); i++) {
            JsonNode item = items.get(i).elements().next(); // {"index": {...}}
            int status = item.path("status").asInt(0);
            if (status >= 300 || item.has("error")) {
                JsonNode error = item.path("error");
                errors.add(new ItemError(i, status, error.path("type").asText("?"), error.path("reason").asText("")));
            }
        }
        return errors;
    }

    private static String shorten(String text) {
        String line = text.replaceAll("\\s+", " ").trim();
        return line.length() <= 500 ? line : line.substring(0, 497) + "...";
    }
}

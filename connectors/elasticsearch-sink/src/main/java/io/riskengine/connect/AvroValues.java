package io.riskengine.connect;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;

/**
 * Avro generic data as plain Java values: the same JSON a Python client gets from the record.
 *
 * <p>Records become {@code Map}s in field order, strings and enum symbols {@code String}s, arrays
 * {@code List}s, maps {@code Map}s with string keys, bytes and fixed base64 strings. Unions need no
 * handling: the generic reader already returns the branch's value, so {@code ["null","string"]}
 * reads as the string or null, as in the Avro JSON the reporting views expect.
 */
final class AvroValues {
    private AvroValues() {}

    /** {@code datum} (from a {@code GenericDatumReader}) as Map/List/String/Number/Boolean/null. */
    static Object toPlain(Object datum) {
        if (datum == null || datum instanceof Number || datum instanceof Boolean) {
            return datum;
        }
        if (datum instanceof GenericRecord record) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Schema.Field field : record.getSchema().getFields()) {
                out.put(field.name(), toPlain(record.get(field.pos())));
            }
            return out;
        }
        if (datum instanceof CharSequence || datum instanceof GenericEnumSymbol<?>) {
            return datum.toString();
        }
        if (datum instanceof GenericFixed fixed) {
            return Base64.getEncoder().encodeToString(fixed.bytes());
        }
        if (datum instanceof ByteBuffer buffer) {
            ByteBuffer copy = buffer.duplicate();
            byte[] bytes = new byte[copy.remaining()];
            copy.get(bytes);
            return Base64.getEncoder().encodeToString(bytes);
        }
        if (datum instanceof Map<?, ?> map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                out.put(String.valueOf(entry.getKey()), toPlain(entry.getValue()));
            }
            return out;
        }
        if (datum instanceof Collection<?> items) {
            List<Object> out = new ArrayList<>(items.size());
            for (Object item : items) {
                out.add(toPlain(item));
            }
            return out;
        }
        return datum.toString();
    }
}

package io.riskengine.connect;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigException;

/**
 * Which field of a record is its document id, per topic: {@code topic-prefix:field.path,...}.
 *
 * <p>A rule applies to every topic whose name starts with its prefix, the longest prefix winning,
 * so {@code risk-alerts:alertId} also covers a suffixed {@code risk-alerts-t123} (isolated test or
 * staging runs on one cluster). A dotted path walks nested records: {@code originalTrade.tradeId}.
 */
final class IdFields {
    record Rule(String prefix, List<String> path) {
        String field() {
            return String.join(".", path);
        }
    }

    private final List<Rule> rules;

    private IdFields(List<Rule> rules) {
        this.rules = rules;
    }

    /** Parses the {@code id.fields} setting; raises {@link ConfigException} naming the bad entry. */
    static IdFields parse(String config, List<String> entries) {
        List<Rule> rules = new ArrayList<>();
        for (String raw : entries) {
            String entry = raw.trim();
            if (entry.isEmpty()) {
                continue;
            }
            int colon = entry.lastIndexOf(':');
            String prefix = colon < 0 ? "" : entry.substring(0, colon).trim();
            String field = colon < 0 ? "" : entry.substring(colon + 1).trim();
            if (prefix.isEmpty() || field.isEmpty() || field.startsWith(".") || field.endsWith(".")
                    || field.contains("..")) {
                throw new ConfigException(config, entry, "expected topic-prefix:field.path");
            }
            rules.add(new Rule(prefix, List.of(field.split("\\."))));
        }
        rules.sort(Comparator.comparingInt((Rule rule) -> rule.prefix().length()).reversed());
        return new IdFields(List.copyOf(rules));
    }

    /** The rule for {@code topic} (longest matching prefix), or null: ids from the record's position. */
    Rule ruleFor(String topic) {
        for (Rule rule : rules) {
            if (topic.startsWith(rule.prefix())) {
                return rule;
            }
        }
        return null;
    }

    /** The value at {@code rule}'s path in {@code document} as a string, or null when absent. */
    static String idOf(Rule rule, Map<?, ?> document) {
        Object node = document;
        for (String step : rule.path()) {
            if (!(node instanceof Map<?, ?> map)) {
                return null;
            }
            node = map.get(step);
        }
        if (node == null || node instanceof Map<?, ?> || node instanceof List<?>) {
            return null;
        }
        String id = node.toString();
        return id.isEmpty() ? null : id;
    }

    @Override
    public String toString() {
        List<String> shown = new ArrayList<>();
        for (Rule rule : rules) {
            shown.add(rule.prefix() + "*:" + rule.field());
        }
        return shown.isEmpty() ? "(none: topic-partition-offset)" : String.join(", ", shown);
    }
}

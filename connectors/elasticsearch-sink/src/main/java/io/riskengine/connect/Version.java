package io.riskengine.connect;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/** The plugin version: the Maven version plus the hash of the sources it was built from. */
final class Version {
    private static final String VERSION = load();

    private Version() {}

    /** For example {@code 1.0.0+3f2a9c1b0d4e}. */
    static String get() {
        return VERSION;
    }

    private static String load() {
        Properties properties = new Properties();
        try (InputStream in = Version.class.getResourceAsStream("version.properties")) {
            if (in != null) {
                properties.load(in);
            }
        } catch (IOException e) {
            // Unreadable resource: the fallback below still identifies the plugin.
        }
        return properties.getProperty("version", "unknown");
    }
}

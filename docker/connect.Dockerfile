# syntax=docker/dockerfile:1
# Kafka Connect with riskengine's Elasticsearch sink plugin (connectors/elasticsearch-sink).
#
#   docker build -f docker/connect.Dockerfile -t riskengine-connect:0.1.0 .   (context: the repository root)
#
# The plugin is built with Maven in the first stage; the final image is Apache Kafka's own (the
# same Kafka as the local stack), which runs as its unprivileged `appuser`, plus the plugin folder
# and the worker's properties. Maven and the JDK stay in the build stage.

FROM maven:3.9.11-eclipse-temurin-17 AS build
WORKDIR /src
COPY connectors/elasticsearch-sink/pom.xml /src/pom.xml
# Dependencies first: their layer is reused while only the plugin's sources change.
RUN mvn -B -q --strict-checksums dependency:go-offline
COPY connectors/elasticsearch-sink/src /src/src
RUN mvn -B -q --strict-checksums package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=/plugin \
    && cp target/*.jar /plugin/

FROM apache/kafka:4.1.1
# 1000:1000 is the image's own `appuser`; numeric, so Kubernetes' runAsNonRoot can verify it.
COPY --from=build --chown=1000:1000 /plugin /opt/connectors/riskengine-elasticsearch-sink
COPY --chown=1000:1000 docker/connect-distributed.properties /opt/riskengine/connect-distributed.properties
USER 1000:1000
ENV KAFKA_HEAP_OPTS="-Xms256m -Xmx512m"
EXPOSE 8083
# Ready once the REST API answers and lists the sink (the plugin was found on plugin.path).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["sh", "-c", "wget -q -O - http://127.0.0.1:8083/connector-plugins | grep -q io.riskengine.connect.ElasticsearchSinkConnector"]
ENTRYPOINT ["/opt/kafka/bin/connect-distributed.sh", "/opt/riskengine/connect-distributed.properties"]

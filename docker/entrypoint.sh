#!/bin/sh
# The engine image's roles. The first argument picks one; the rest goes to its command.
#   worker [faust worker options]    faust -A riskengine worker, tables in /var/lib/riskengine/worker
#   producer                         riskengine-producer (RISKENGINE_PRODUCER_HOST/PORT)
#   dashboard [options]              riskengine dashboard (RISKENGINE_DASHBOARD_HOST/PORT)
#   riskengine COMMAND ...           any riskengine command (topics create, schemas register, tail ...)
# Settings come from RISKENGINE_* variables (README, "Settings"); exec, so signals reach the process.
set -eu

role="${1:-worker}"
if [ "$#" -gt 0 ]; then
    shift
fi

case "$role" in
    worker)
        # One datadir per worker: a Kubernetes StatefulSet mounts a persistent volume here.
        exec faust -A riskengine --datadir "${WORKER_DATADIR:-/var/lib/riskengine/worker}" \
            --loglevel "${RISKENGINE_LOG_LEVEL:-info}" worker --web-port "${WORKER_WEB_PORT:-6066}" "$@"
        ;;
    producer)
        exec riskengine-producer "$@"
        ;;
    dashboard)
        exec riskengine dashboard "$@"
        ;;
    riskengine)
        exec riskengine "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac

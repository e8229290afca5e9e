#!/bin/sh
# Starts Alertmanager only when every secret file its configuration names (each `*_file:` key: the Slack
# URL, the PagerDuty routing key, the SMTP password) exists and is not empty. Alertmanager itself reads
# them only when it sends, so a missing one would show as a failed notification during the first
# incident. docker-compose.yml runs this as the alertmanager service's entrypoint; the arguments are
# Alertmanager's own. Where the channels are not set up yet, alertmanager-null.yml names no secret.
set -eu

config=/etc/alertmanager/alertmanager.yml
for argument in "$@"; do
    case "$argument" in
        --config.file=*) config="${argument#--config.file=}" ;;
    esac
done

if [ ! -s "$config" ]; then
    echo "alertmanager: refusing to start: no configuration at $config" >&2
    exit 1
fi

missing=""
for file in $(sed -n 's/^[^#]*_file:[[:space:]]*["'\'']\{0,1\}\([^"'\''[:space:]#]*\).*/\1/p' "$config"); do
    [ -s "$file" ] || missing="$missing $file"
done
if [ -n "$missing" ]; then
    echo "alertmanager: refusing to start: $config names secret files that are missing or empty:$missing" >&2
    echo "alertmanager: put them in alerting-rules/secrets/ (its README says what goes in each)," \
        "or set ALERTMANAGER_CONFIG=alertmanager-null.yml in .env to run without notifications" >&2
    exit 1
fi

exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" "$@"

#!/usr/bin/env sh
# Creates seamwatch's topics with Kafka's own tool. Partitions are the unit
# of scale: a group of N seamwatch members needs at least N partitions on the
# busiest topic. Producers key every record by account (CloudTrail
# `recipientAccountId`), subscription (Azure) or project (GCP), so that one
# account's events, which correlations join, stay on one partition.
#
#   BOOTSTRAP=b-1.example:9096 COMMAND_CONFIG=client.properties deploy/feeds/topics.sh
set -eu
: "${BOOTSTRAP:?set BOOTSTRAP to the brokers}"
REPLICATION="${REPLICATION:-3}"
config=""
[ -n "${COMMAND_CONFIG:-}" ] && config="--command-config $COMMAND_CONFIG"
create() {
  # shellcheck disable=SC2086
  kafka-topics.sh --bootstrap-server "$BOOTSTRAP" $config --create --if-not-exists \
    --topic "$1" --partitions "$2" --replication-factor "$REPLICATION" ${3:+--config "$3"}
}
create cloudtrail 12 retention.ms=1209600000        # 14 days: covers warm-up and re-reads
create azure-activity 6 retention.ms=1209600000
create gcp-audit 6 retention.ms=1209600000
create seamwatch-dead-letter 3 retention.ms=2592000000   # 30 days to look at what failed
create seamwatch-alerts 3

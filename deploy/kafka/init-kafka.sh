#!/bin/bash
# One-shot set-up of docker-compose.yml's Kafka (run by the kafka-init service, as the superuser):
# a SCRAM principal per service and for the ERP, the contract topics with their dead-letter topics,
# and the ACLs. Each service produces only its own output topics (and the dead-letter topics of its
# inputs) and consumes only its inputs, in its own consumer group; the ERP only writes erp.*.
# tests/deploy/test_production_shape.py checks these lines against the services.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?}"
bootstrap=kafka:9092
admin=/tmp/admin.properties
cat > "$admin" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPERTIES
bin=/opt/kafka/bin

principal() {  # principal <name> <password>
  "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --alter \
    --entity-type users --entity-name "$1" --add-config "SCRAM-SHA-512=[password=$2]"
}
topic() {  # topic <name>: the topic and its dead-letter topic
  for name in "$1" "$1.dlq"; do
    "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --create --if-not-exists \
      --topic "$name" --partitions "${TOPIC_PARTITIONS:-4}" --replication-factor 1
  done
}
acl() {
  "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --add "$@"
}
consumes() {  # consumes <principal> <topic>: read it in group kredit-<principal>, dead-letter to <topic>.dlq
  acl --allow-principal "User:$1" --operation Read --operation Describe --topic "$2"
  acl --allow-principal "User:$1" --operation Read --group "kredit-$1"
  acl --allow-principal "User:$1" --operation Write --operation Describe --topic "$2.dlq"
}
produces() {  # produces <principal> <topic>
  acl --allow-principal "User:$1" --operation Write --operation Describe --topic "$2"
}

principal invoicing "${KAFKA_INVOICING_PASSWORD:?}"
principal settlement "${KAFKA_SETTLEMENT_PASSWORD:?}"
principal collections "${KAFKA_COLLECTIONS_PASSWORD:?}"
principal ledger-posting "${KAFKA_LEDGER_POSTING_PASSWORD:?}"
principal erp "${KAFKA_ERP_PASSWORD:?}"

for name in erp.customer-invoices erp.customer-payments ar.customer-transactions ar.settlements \
    gl.journal-lines gl.general-journals gl.journal-events gl.exchange-rates; do
  topic "$name"
done

consumes invoicing erp.customer-invoices
consumes invoicing gl.exchange-rates
produces invoicing ar.customer-transactions
produces invoicing gl.journal-lines

consumes settlement erp.customer-payments
consumes settlement ar.customer-transactions
consumes settlement gl.journal-events
consumes settlement gl.exchange-rates
produces settlement ar.customer-transactions
produces settlement ar.settlements
produces settlement gl.journal-lines

consumes collections ar.customer-transactions
consumes collections ar.settlements
consumes collections gl.journal-events
consumes collections gl.exchange-rates
produces collections gl.general-journals
produces collections erp.customer-invoices

consumes ledger-posting gl.journal-lines
consumes ledger-posting gl.general-journals
produces ledger-posting gl.journal-events
produces ledger-posting gl.exchange-rates

produces erp erp.customer-invoices
produces erp erp.customer-payments

echo "kafka-init: principals, topics and ACLs are in place"

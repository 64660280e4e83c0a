#!/usr/bin/env bash
# Install distillguard with its test extras, start the real services the tests need
# (PostgreSQL, and the Kafka broker once streaming tests exist), run the whole suite, stop them.
# The README's test command and .ci/run are this script, so they cannot drift.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"

cleanup() {
  bash deploy/postgres/pg.sh stop >/dev/null 2>&1 || true
  bash deploy/kafka/broker.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== starting PostgreSQL (deploy/postgres/pg.sh)"
DISTILLGUARD_TEST_POSTGRES_URL="$(bash deploy/postgres/pg.sh start | tail -n 1)"
export DISTILLGUARD_TEST_POSTGRES_URL

echo "== starting Kafka (deploy/kafka/broker.sh)"
DISTILLGUARD_KAFKA_BOOTSTRAP="$(bash deploy/kafka/broker.sh start | tail -n 1)"
export DISTILLGUARD_KAFKA_BOOTSTRAP

echo "== lint"
python3 -m ruff check .
python3 -m ruff format --check .
# the source packages (pyproject.toml [tool.mypy] packages); the tests are not type-checked
python3 -m mypy

echo "== tests"
python3 -m pytest "$@"

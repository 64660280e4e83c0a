#!/usr/bin/env bash
# deploy/kafka/broker.sh — a throw-away, single-node Apache Kafka broker for tests.
#
#   deploy/kafka/broker.sh start    # start (or reuse) the broker; last stdout line = bootstrap address
#   deploy/kafka/broker.sh stop     # SIGTERM, wait, then SIGKILL; no-op if not running
#   deploy/kafka/broker.sh status   # prints running/stopped; exit 0 if running, 3 if not
#   deploy/kafka/broker.sh clean    # stop, then wipe the data dir
#
# The broker is a real Kafka 4.x in KRaft combined mode (broker+controller), listening on
# 127.0.0.1 only. Its jars come from Maven Central through `mvn` (kafka_2.13 and its runtime
# dependencies plus a log4j2 binding) and are cached, so only the first start downloads.
# The test runner calls `broker.sh start` before pytest and `broker.sh stop` after, and
# exports the printed address as DISTILLGUARD_KAFKA_BOOTSTRAP for the tests.
#
# Environment (all optional):
#   DISTILLGUARD_KAFKA_PORT             client port (default 9092)
#   DISTILLGUARD_KAFKA_CONTROLLER_PORT  KRaft controller port (default client port + 1)
#   DISTILLGUARD_KAFKA_DIR              data, config, pid and logs (default /tmp/distillguard-kafka)
#   DISTILLGUARD_KAFKA_VERSION          Kafka version (default: first of 4.4.0 4.3.1 4.2.0 4.1.1 4.0.0 that resolves)
#   DISTILLGUARD_CACHE                  jar cache root (default $HOME/.cache/distillguard)
#   DISTILLGUARD_KAFKA_HEAP             JVM heap flags (default "-Xms128m -Xmx512m")
#   DISTILLGUARD_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 120)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${DISTILLGUARD_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${DISTILLGUARD_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
DIR="${DISTILLGUARD_KAFKA_DIR:-/tmp/distillguard-kafka}"
CACHE="${DISTILLGUARD_CACHE:-${HOME:-/root}/.cache/distillguard}"
VERSIONS="${DISTILLGUARD_KAFKA_VERSION:-4.4.0 4.3.1 4.2.0 4.1.1 4.0.0}"
HEAP="${DISTILLGUARD_KAFKA_HEAP:--Xms128m -Xmx512m}"
TIMEOUT="${DISTILLGUARD_KAFKA_START_TIMEOUT:-120}"
# C1-only JIT: starts the broker roughly twice as fast on a small machine; plenty for tests.
FAST_JVM="-XX:TieredStopAtLevel=1"
# Pinned so the slf4j binding always matches log4j-core, whatever the Kafka version pulls in.
LOG4J_VERSION=2.25.5
SLF4J_VERSION=2.0.17
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

BOOTSTRAP="127.0.0.1:${PORT}"
PIDFILE="$DIR/broker.pid"
LOGDIR="$DIR/logs"

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { echo "broker.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Installs a Debian package when a needed command is missing (CI runs as root on fresh machines).
need() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || die "'$cmd' not found; install package '$pkg'"
    log "installing $pkg (for $cmd)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$pkg" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$pkg" >/dev/null; }
    command -v "$cmd" >/dev/null 2>&1 || die "installing $pkg did not provide '$cmd'"
}

# --- process helpers ---------------------------------------------------------------

broker_pid() {  # prints the pid if our broker is alive
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    # Guard against a recycled pid: it must be our java kafka.Kafka process.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

alive() {  # like kill -0, but a zombie counts as dead
    kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
    log "---- last lines of $LOGDIR/server.log / kafka.out ----"
    tail -n 40 "$LOGDIR/server.log" >&2 2>/dev/null || true
    tail -n 20 "$LOGDIR/kafka.out" >&2 2>/dev/null || true
}

# --- jars ----------------------------------------------------------------------------

# Sets LIBS to a cached libs/ dir, downloading the jars with mvn on first use.
fetch_jars() {
    local v
    for v in $VERSIONS; do
        if [ -f "$CACHE/kafka-$v/libs/.complete" ]; then
            LIBS="$CACHE/kafka-$v/libs"; KAFKA_VERSION="$v"; return 0
        fi
    done
    need java default-jdk-headless
    need mvn maven
    for v in $VERSIONS; do
        if download_jars "$v"; then
            LIBS="$CACHE/kafka-$v/libs"; KAFKA_VERSION="$v"; return 0
        fi
        log "Kafka $v could not be resolved (see $CACHE/kafka-$v/mvn.log)"
    done
    die "no Kafka version out of [$VERSIONS] could be downloaded with mvn"
}

download_jars() {
    local v="$1" dest="$CACHE/kafka-$1"
    mkdir -p "$dest"
    log "downloading Kafka $v jars with mvn into $dest/libs (first run only)"
    cat >"$dest/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.distillguard</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$v</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    rm -rf "$dest/libs.tmp"
    if ! mvn -B -f "$dest/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime -DoutputDirectory="$dest/libs.tmp" </dev/null >"$dest/mvn.log" 2>&1; then
        tail -n 15 "$dest/mvn.log" >&2
        rm -rf "$dest/libs.tmp"
        return 1
    fi
    [ -f "$dest/libs.tmp/kafka_2.13-$v.jar" ] || return 1
    touch "$dest/libs.tmp/.complete"
    rm -rf "$dest/libs"
    mv "$dest/libs.tmp" "$dest/libs"
    log "cached $(find "$dest/libs" -name "*.jar" | wc -l) jars for Kafka $v"
}

# Compiles KafkaReady.java once per cache dir (running it as a source file costs ~5 s per start).
build_probe() {
    PROBE="$(dirname "$LIBS")/probe"
    [ "$PROBE/KafkaReady.class" -nt "$HERE/KafkaReady.java" ] && return 0
    need javac default-jdk-headless
    mkdir -p "$PROBE"
    javac -nowarn -cp "$LIBS/*" -d "$PROBE" "$HERE/KafkaReady.java" >&2 || die "could not compile KafkaReady.java"
}

# --- config ----------------------------------------------------------------------------

write_config() {
    cat >"$DIR/server.properties" <<EOF
# Generated by deploy/kafka/broker.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data

# Sized for a 2-core test machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1

# Single node: every internal topic has one replica.
auto.create.topics.enable=true
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Compaction is used by the account-decisions topic; keep the cleaner but shrink its buffer.
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.backoff.ms=5000
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

# --- commands ----------------------------------------------------------------------------

cmd_start() {
    local pid
    if pid="$(broker_pid)"; then
        log "already running (pid $pid) on $BOOTSTRAP"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PIDFILE"
    if port_open "$PORT"; then die "port $PORT is already in use by another process"; fi
    if port_open "$CONTROLLER_PORT"; then die "controller port $CONTROLLER_PORT is already in use"; fi

    fetch_jars
    need java default-jdk-headless
    build_probe
    mkdir -p "$DIR/data" "$LOGDIR"
    write_config

    local cp="$LIBS/*"
    if [ ! -f "$DIR/data/meta.properties" ]; then
        local cluster_id
        cluster_id="$(java $FAST_JVM -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$LOGDIR/format.log" | tail -n 1)"
        [ -n "$cluster_id" ] || die "could not generate a cluster id (see $LOGDIR/format.log)"
        log "formatting storage in $DIR/data (cluster id $cluster_id)"
        java $FAST_JVM -cp "$cp" -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$LOGDIR" \
            kafka.tools.StorageTool format --config "$DIR/server.properties" \
            --cluster-id "$cluster_id" --ignore-formatted >>"$LOGDIR/format.log" 2>&1 \
            || { tail -n 20 "$LOGDIR/format.log" >&2; die "storage format failed"; }
    fi

    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT, dir $DIR)"
    # setsid + closed fds: the broker outlives this script and never holds its stdout/lock.
    # shellcheck disable=SC2086
    setsid java $HEAP $FAST_JVM -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.shutdownHookEnabled=false -Dkafka.logs.dir="$LOGDIR" \
        -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        -cp "$cp" kafka.Kafka "$DIR/server.properties" \
        </dev/null >>"$LOGDIR/kafka.out" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"

    # Wait for the port, then for a real metadata round trip with the Java admin client.
    local start=$SECONDS
    until port_open "$PORT"; do
        if ! alive "$pid"; then
            rm -f "$PIDFILE"; log_tail; die "broker process exited during startup"
        fi
        if (( SECONDS - start >= TIMEOUT )); then
            log_tail; cmd_stop >/dev/null 2>&1 || true
            die "broker did not open port $PORT within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
    log "port $PORT open after $((SECONDS - start))s, checking metadata"
    local left=$(( TIMEOUT - (SECONDS - start) )); (( left > 5 )) || left=5
    if ! java $FAST_JVM -XX:+UseSerialGC -cp "$PROBE:$cp" -Dlog4j2.level=WARN KafkaReady "$BOOTSTRAP" "$left" \
            >"$LOGDIR/ready.log" 2>&1; then
        cat "$LOGDIR/ready.log" >&2; log_tail; cmd_stop >/dev/null 2>&1 || true
        die "broker on $BOOTSTRAP did not answer metadata requests within ${TIMEOUT}s"
    fi
    log "ready after $((SECONDS - start))s: $(grep READY "$LOGDIR/ready.log" | tail -n 1) (pid $pid)"
    echo "$BOOTSTRAP"
}

cmd_stop() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    log "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do  # up to 30 s for a clean shutdown
        alive "$pid" || break
        sleep 0.5
    done
    if alive "$pid"; then
        log "still alive after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.2; done
    fi
    rm -f "$PIDFILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(broker_pid)"; then
        echo "running (pid $pid) on $BOOTSTRAP"
        return 0
    fi
    echo "stopped"
    return 3
}

cmd_clean() {
    cmd_stop
    rm -rf "$DIR"
    log "removed $DIR"
}

[ $# -eq 1 ] || usage
mkdir -p "$DIR"
# One broker.sh at a time per data dir (fd 9 is closed for the broker itself).
exec 9>"$DIR/.lock"
flock -w 300 9 || die "another broker.sh holds $DIR/.lock"
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    *) usage ;;
esac

# shellcheck shell=bash
# Helpers shared by scripts/services.sh and scripts/kafka-cluster.sh.
# Source it; it defines functions and a few variables and runs nothing else.
#
#   PARLEY_CACHE          jar cache root     (default $HOME/.cache/parley)
#   PARLEY_SERVICES_DIR   runtime state root (default $HOME/.cache/parley/services)
#
# Everything this writes lives under those two folders, never in the repository.

PARLEY_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PARLEY_KAFKA_POM="$PARLEY_REPO_ROOT/services/kafka/pom.xml"
PARLEY_CACHE="${PARLEY_CACHE:-$HOME/.cache/parley}"
PARLEY_SERVICES_DIR="${PARLEY_SERVICES_DIR:-$HOME/.cache/parley/services}"

log() { printf '[%s] %s\n' "${PARLEY_LOG_TAG:-services}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run apt-get install for the given packages (apt-get update first, as we only
# get here when something is missing).
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need to install $* but apt-get is not available"
    [ "$(id -u)" -eq 0 ] || die "need to install $* (apt-get) but not running as root"
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

ensure_java() {
    command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
}

ensure_maven() {
    ensure_java
    command -v mvn >/dev/null 2>&1 || apt_install maven
}

# Kafka version = <kafka.version> in services/kafka/pom.xml (single source of truth).
kafka_version() {
    local v
    v="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$PARLEY_KAFKA_POM" | head -n1)"
    [ -n "$v" ] || die "cannot read <kafka.version> from $PARLEY_KAFKA_POM"
    printf '%s\n' "$v"
}

# Make sure the broker's runtime classpath is in the cache; prints the libs dir.
# Downloaded once (marker file holding the POM's checksum, so that editing the
# POM, e.g. the log4j version, refreshes it), reused afterwards. A lock keeps
# concurrent callers from downloading twice.
ensure_kafka_libs() {
    local version base libs marker sum
    version="$(kafka_version)"
    base="$PARLEY_CACHE/kafka-$version"
    libs="$base/libs"
    marker="$base/.libs-complete"
    sum="$(cksum < "$PARLEY_KAFKA_POM" | cut -d' ' -f1)"
    if [ -d "$libs" ] && [ "$(cat "$marker" 2>/dev/null)" = "$sum" ]; then
        printf '%s\n' "$libs"
        return 0
    fi
    mkdir -p "$base"
    (
        flock -w 600 8 || die "timed out waiting for the jar-cache lock $base/.lock"
        if [ "$(cat "$marker" 2>/dev/null)" != "$sum" ]; then
            ensure_maven
            log "downloading Apache Kafka $version jars into $libs (first time only)"
            rm -rf "$libs.tmp"
            if ! mvn -B -q -Dstyle.color=never \
                org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
                -DincludeScope=runtime -DoutputDirectory="$libs.tmp" \
                -f "$PARLEY_KAFKA_POM" >"$base/mvn.log" 2>&1; then
                tail -n 30 "$base/mvn.log" >&2
                die "mvn copy-dependencies failed (full output in $base/mvn.log)"
            fi
            [ -f "$libs.tmp/kafka_2.13-$version.jar" ] \
                || die "kafka_2.13-$version.jar missing after copy-dependencies"
            rm -f "$marker"
            rm -rf "$libs"
            mv "$libs.tmp" "$libs"
            echo "$sum" > "$marker"
        fi
    ) 8>"$base/.lock" || exit 1
    printf '%s\n' "$libs"
}

# log4j2 config: everything at WARN (PARLEY_KAFKA_LOG_LEVEL) into
# $dir/server.log (rolled), plus the INFO line that says the server started.
# Nothing on the console.
write_log4j2_config() {
    local file="$1" level="${PARLEY_KAFKA_LOG_LEVEL:-WARN}"
    sed "s/@LEVEL@/$level/" > "$file" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="20 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.Kafka" level="INFO"/>
    <Root level="@LEVEL@">
      <AppenderRef ref="file"/>
    </Root>
  </Loggers>
</Configuration>
EOF
}

# pid_alive PIDFILE MARKER: true when the pid in PIDFILE runs and its command
# line contains MARKER (guards against a recycled pid).
pid_alive() {
    local pidfile="$1" marker="$2" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# pid_running PID: the process exists and is not a zombie.
pid_running() {
    local state
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)"
    [ -n "$state" ] && [ "$state" != Z ]
}

elapsed_since() {  # elapsed_since T0_NANOS -> seconds with one decimal
    local now
    now="$(date +%s%N)"
    printf '%d.%d' $(((now - $1) / 1000000000)) $((((now - $1) / 100000000) % 10))
}

port_open() {  # port_open HOST PORT
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# kafka_ready BOOTSTRAP MIN_BROKERS: every host:port in the comma-separated
# BOOTSTRAP answers a Kafka Metadata request that lists at least MIN_BROKERS
# brokers. In KRaft a broker only appears in metadata once the controller has
# unfenced it, i.e. when topic creation and produce work. Uses a dependency-free
# Python probe (raw Metadata v7); falls back to a port check without python3.
kafka_ready() {
    local bootstrap="$1" min="$2"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$bootstrap" "$min" <<'PY'
import socket, struct, sys

class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.s = socket.create_connection((host, port), timeout=2)
        self.s.settimeout(3)
        self.corr = 0

    def request(self, api_key: int, version: int, payload: bytes) -> bytes:
        """Non-flexible request (header v1); returns the body after correlation_id."""
        self.corr += 1
        client = b"parley-probe"
        body = struct.pack(">hhih", api_key, version, self.corr, len(client)) + client + payload
        self.s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", self.read(4))
        data = self.read(size)
        return data[4:]

    def read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

def ready(host: str, port: int, need: int) -> bool:
    c = Conn(host, port)
    try:
        # Metadata v7, no topics: brokers are listed only once the controller
        # has unfenced them, so topic creation and produce can work.
        data = c.request(3, 7, struct.pack(">ib", 0, 0))
        _throttle, nbrokers = struct.unpack_from(">ii", data, 0)
        if nbrokers < need:
            return False
        # InitProducerId v1 (no transactional id): succeeds once the broker has
        # a producer-id block from the controller, so idempotent producers do not
        # get COORDINATOR_LOAD_IN_PROGRESS at first. A broker that does not
        # speak v1 closes the connection: then the metadata check must do.
        try:
            data = c.request(22, 1, struct.pack(">hi", -1, 60000))
        except (EOFError, OSError):
            return True
        _throttle, error = struct.unpack_from(">ih", data, 0)
        return error == 0
    finally:
        c.s.close()

bootstrap, need = sys.argv[1], int(sys.argv[2])
try:
    for hp in bootstrap.split(","):
        host, port = hp.rsplit(":", 1)
        if not ready(host, int(port), need):
            sys.exit(1)
except Exception:
    sys.exit(1)
sys.exit(0)
PY
    else
        local hp
        for hp in ${bootstrap//,/ }; do
            port_open "${hp%:*}" "${hp##*:}" || return 1
        done
    fi
}

# start_kafka_node STATE_DIR LIBS HEAP PROPERTIES_FILE [GC]
# Starts kafka.Kafka detached (own session, all stdio to files, lock fds closed)
# and writes STATE_DIR/kafka.pid. GC is "g1" (the default) or "z"; either way
# the collector logs to STATE_DIR/logs/gc.log.
start_kafka_node() {
    local dir="$1" libs="$2" heap="$3" props="$4" gc="${5:-g1}"
    local gc_opts=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20)
    [ "$gc" = z ] && gc_opts=(-XX:+UseZGC)
    mkdir -p "$dir/logs"
    write_log4j2_config "$dir/log4j2.xml"
    # shellcheck disable=SC2016
    setsid sh -c 'echo $$ > "$1"; shift; exec "$@"' sh "$dir/kafka.pid" \
        java "-Xms$heap" "-Xmx$heap" "${gc_opts[@]}" \
        "-Xlog:gc:file=$dir/logs/gc.log:time,uptime:filecount=2,filesize=10m" \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$dir/log4j2.xml" "-Dkafka.logs.dir=$dir/logs" \
        -cp "$libs/*" kafka.Kafka "$props" \
        </dev/null >"$dir/logs/kafka.out" 2>&1 8>&- 9>&- &
    # wait until the pid file exists (written by the child before exec)
    local tries=0
    while [ "$tries" -lt 50 ]; do
        [ -s "$dir/kafka.pid" ] && return 0
        sleep 0.1
        tries=$((tries + 1))
    done
    die "kafka process in $dir did not start"
}

# stop_pids TIMEOUT PIDFILE...: SIGTERM every live pid, wait up to TIMEOUT
# seconds for all of them, then SIGKILL the rest. Removes the pid files.
stop_pids() {
    local timeout="$1"; shift
    local f pid pids=() deadline
    for f in "$@"; do
        if pid_alive "$f" kafka.Kafka; then
            pid="$(cat "$f")"
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
    done
    deadline=$((SECONDS + timeout))
    for pid in "${pids[@]}"; do
        while pid_running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        if pid_running "$pid"; then
            log "pid $pid did not stop within ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for f in "$@"; do rm -f "$f"; done
}

show_kafka_failure() {  # show_kafka_failure STATE_DIR
    log "--- last lines of $1/logs/kafka.out ---"
    tail -n 20 "$1/logs/kafka.out" >&2 2>/dev/null || true
    log "--- last lines of $1/logs/server.log ---"
    tail -n 20 "$1/logs/server.log" >&2 2>/dev/null || true
}

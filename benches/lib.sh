# Shell functions shared by the benchmark scripts; sourced, not run.
# The sourcing script defines die().

now() { date +%s.%N; }

# The median, the "slowest-fastest" range and the maximum of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# Paired comparisons of two runs per round, given as `A1 A2 ... -- B1 B2
# ...`: `pairs` prints "A_i B_i" a line; `paired` the median of the ratios
# B_i/A_i - 1; `rounds_above` how many B_i exceed their A_i, as "n/N".
pairs() {
    local -a a=()
    while [[ $# -gt 0 && $1 != -- ]]; do a+=("$1"); shift; done
    shift
    local -a b=("$@")
    local i
    for ((i = 0; i < ${#a[@]} && i < ${#b[@]}; i++)); do
        echo "${a[i]} ${b[i]}"
    done
}
paired() {
    # shellcheck disable=SC2046
    median $(pairs "$@" | awk '{ printf "%.6f\n", $2 / $1 - 1 }')
}
rounds_above() { pairs "$@" | awk '$2 > $1 { n++ } END { print n + 0 "/" NR }'; }

# petrel's shard count in the SMTP benchmarks: one CPU fewer than the
# machine has (at least 1), because smtp-source and smtp-sink run on the
# same machine and each needs a CPU as much as petrel does; with a shard
# pinned to every CPU they all preempt each other. SHARDS=N overrides
# (SHARDS=0: one per CPU, the daemon's default).
if [[ -z ${SHARDS:-} ]]; then
    SHARDS=$(($(nproc) > 1 ? $(nproc) - 1 : 1))
fi
# The shards that will run, hence the listening sockets to wait for.
shard_count=$SHARDS
((shard_count > 0)) || shard_count=$(nproc)
# smtp-source and smtp-sink run on the CPUs no shard is pinned to (petrel
# pins shards to the first CPUs of distinct cores, and its other threads
# to the rest), so that the load generator takes no turns from a shard:
# TOOL_CPUS (a taskset list); default: the CPUs from shard_count on, none
# (no pinning) when the shards take every CPU. TOOL_CPUS="" turns it off.
if [[ -z ${TOOL_CPUS+set} ]]; then
    TOOL_CPUS=""
    ((shard_count < $(nproc))) && TOOL_CPUS="$shard_count-$(($(nproc) - 1))"
fi
tool_pin=()
[[ -n $TOOL_CPUS ]] && tool_pin=(taskset -c "$TOOL_CPUS")

# Fails when something already listens on HOST:PORT.
require_free() {
    local host=${1%:*} port=${1##*:}
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        die "$1 is already in use; set the *_ADDR variables (see the script's header)"
    fi
}

# Waits until HOST:PORT has COUNT listening sockets (SO_REUSEPORT: one per
# shard), or PID exits; gives up after 30 s.
wait_listening() {
    local addr=$1 count=$2 pid=$3 i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (($(ss -Hltn "src $addr" | wc -l) >= count)); then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# utime + stime of a whole process (all threads), in clock ticks. The
# command name in field 2 may hold spaces, so fields are counted after ')'.
cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))
}

# Checks that Postfix's smtp-source and smtp-sink ($SMTP_SOURCE,
# $SMTP_SINK) are there, builds petrel in release mode from $repo and sets
# petrel to its binary.
build_petrel_and_check_tools() {
    local tool
    for tool in "$SMTP_SOURCE" "$SMTP_SINK"; do
        [[ -x $tool ]] || die "$tool not found: install Postfix (apt-get install postfix)"
    done
    cargo build --release --manifest-path "$repo/Cargo.toml" --bin petrel
    petrel=$repo/target/release/petrel
}

# Writes a petrel config to FILE for PETREL_ADDR, with its spool in SPOOL,
# relaying from loopback; the rest of the file (from [delivery] on) is
# TAIL.
write_petrel_config() {
    cat >"$1" <<EOF
[server]
shards = $SHARDS
postmaster = "postmaster@example.test"

[spool]
path = "$2"
min_free_space = 0

[[listener]]
address = "$PETREL_ADDR"

[relay]
networks = ["127.0.0.0/8"]

$3
EOF
}

# Stops every process in the started_pids array that still runs.
stop_started() {
    local pid
    for pid in "${started_pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}

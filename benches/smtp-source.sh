#!/usr/bin/env bash
# Receive-path benchmark with Postfix's smtp-source.
#
# For each case (1 KiB and 100 KiB messages; a new connection per message,
# and one connection per session reused for all its messages) it runs
# smtp-source against Postfix's smtp-sink, which stores nothing (the
# protocol limit of this machine), then against petrel with delivery paused
# on a fresh spool. For petrel it reports the durable accept rate, its CPU
# time per message and its peak RSS, and checks with `petrel spool inspect`
# that every acknowledged message is in the spool: a rate is never printed
# for mail that was not kept.
#
# Usage: benches/smtp-source.sh          (from any directory)
# Environment:
#   MESSAGES=50000        messages per run
#   SESSIONS=20           parallel smtp-source sessions
#   SIZES="1024 102400"   message body sizes (smtp-source -l)
#   ROUNDS=3              runs of each case against each server (medians)
#   SHARDS=CPUs-1         petrel's shards (see lib.sh; 0 = one per CPU)
#   SINK_ADDR=127.0.0.2:2526, PETREL_ADDR=127.0.0.3:2525
#   PETREL_BENCH_DIR=target/   where the spool goes (not /tmp: may be tmpfs)
#   SMTP_SOURCE, SMTP_SINK     paths of the Postfix tools (/usr/sbin/...)
# See benches/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"

MESSAGES=${MESSAGES:-50000}
SIZES=${SIZES:-1024 102400}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
SINK_ADDR=${SINK_ADDR:-127.0.0.2:2526}
PETREL_ADDR=${PETREL_ADDR:-127.0.0.3:2525}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
BENCH_DIR=${PETREL_BENCH_DIR:-$repo/target}
FROM=from@example.test
TO=to@example.test

die() {
    echo "smtp-source.sh: $*" >&2
    exit 1
}

build_petrel_and_check_tools

mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/petrel-smtp-bench.XXXXXX")
started_pids=()

cleanup() {
    stop_started
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tick_hz=$(getconf CLK_TCK)

peak_rss_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# The functions below set globals instead of printing, so that they never run
# in a subshell: a failure then exits the script itself and the EXIT trap
# stops every process they started.

# Runs smtp-source with MODE_FLAGS and SIZE against ADDR; sets secs.
run_source() {
    local addr=$1 size=$2 mode_flags=$3 t0 t1
    t0=$(now)
    # shellcheck disable=SC2086
    "$SMTP_SOURCE" $mode_flags -s "$SESSIONS" -m "$MESSAGES" -l "$size" \
        -f "$FROM" -t "$TO" "$addr" ||
        die "smtp-source against $addr failed (size $size, flags '$mode_flags')"
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# Sets sink_rate (msg/s) for one smtp-sink run.
run_sink() {
    local size=$1 mode_flags=$2 user_flags=() pid
    [[ $(id -u) == 0 ]] && user_flags=(-u nobody)
    require_free "$SINK_ADDR"
    "$SMTP_SINK" "${user_flags[@]}" "$SINK_ADDR" 1000 &
    pid=$!
    started_pids+=("$pid")
    wait_listening "$SINK_ADDR" 1 "$pid" || die "smtp-sink did not start on $SINK_ADDR"
    run_source "$SINK_ADDR" "$size" "$mode_flags"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    sink_rate=$(awk -v n="$MESSAGES" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
}

# Sets petrel_rate (msg/s), cpu_us (CPU time per message) and rss_mib (peak
# RSS) for one petrel run, after checking that the spool holds every message.
run_petrel() {
    local size=$1 mode_flags=$2 case_dir=$work/petrel pid ticks0 ticks1 rss rc queued
    rm -rf "$case_dir"
    mkdir -p "$case_dir"
    write_petrel_config "$case_dir/petrel.toml" "$case_dir/spool" "[delivery]
paused = true"
    require_free "$PETREL_ADDR"
    PETREL_LOG=warn "$petrel" run --config "$case_dir/petrel.toml" 2>"$case_dir/petrel.log" &
    pid=$!
    started_pids+=("$pid")
    wait_listening "$PETREL_ADDR" "$shard_count" "$pid" ||
        die "petrel did not start on $PETREL_ADDR; its log: $(cat "$case_dir/petrel.log")"
    ticks0=$(cpu_ticks "$pid")
    run_source "$PETREL_ADDR" "$size" "$mode_flags"
    ticks1=$(cpu_ticks "$pid")
    rss=$(peak_rss_kib "$pid")
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || die "petrel exited with status $rc; its log: $(cat "$case_dir/petrel.log")"
    queued=$("$petrel" spool inspect "$case_dir/spool" |
        awk -F': ' '/^total queued messages:/ { print $2 }')
    echo "  petrel spool inspect: $queued queued messages, $MESSAGES sent"
    [[ $queued == "$MESSAGES" ]] ||
        die "FAILED: $MESSAGES messages were acknowledged but the spool holds ${queued:-?}"
    rm -rf "$case_dir"
    petrel_rate=$(awk -v n="$MESSAGES" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    cpu_us=$(awk -v t="$((ticks1 - ticks0))" -v hz="$tick_hz" -v n="$MESSAGES" \
        'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    rss_mib=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
}

echo "petrel receive benchmark: $MESSAGES messages per run, $SESSIONS sessions," \
    "$shard_count shards, $(nproc) CPUs, spool under $BENCH_DIR"
echo "smtp-sink on $SINK_ADDR, petrel on $PETREL_ADDR; Postfix as a durable MTA is not measured"

rows=()
for size in $SIZES; do
    for mode in new reuse; do
        mode_flags=""
        [[ $mode == reuse ]] && mode_flags="-d"
        label="$((size / 1024)) KiB, $mode conn"
        sinks=() petrels=() cpus=() rsss=()
        for ((round = 1; round <= ROUNDS; round++)); do
            echo "case: $label, round $round of $ROUNDS"
            run_sink "$size" "$mode_flags"
            echo "  smtp-sink: $sink_rate msg/s"
            run_petrel "$size" "$mode_flags"
            echo "  petrel: $petrel_rate msg/s, $cpu_us us CPU/msg, peak RSS $rss_mib MiB"
            sinks+=("$sink_rate") petrels+=("$petrel_rate") cpus+=("$cpu_us") rsss+=("$rss_mib")
        done
        sink_med=$(median "${sinks[@]}")
        petrel_med=$(median "${petrels[@]}")
        ratio=$(awk -v p="$petrel_med" -v s="$sink_med" 'BEGIN { printf "%.2f", p / s }')
        rows+=("$(printf '%-22s %12s %12s %8s %15s %12s %14s' "$label" "$sink_med" \
            "$petrel_med" "$ratio" "$(range "${petrels[@]}")" "$(median "${cpus[@]}")" \
            "$(maximum "${rsss[@]}")")")
    done
done

echo
echo "medians of $ROUNDS rounds (petrel range: slowest-fastest round)"
printf '%-22s %12s %12s %8s %15s %12s %14s\n' case "sink msg/s" "petrel msg/s" ratio \
    "petrel range" "CPU us/msg" "peak RSS MiB"
printf '%s\n' "${rows[@]}"

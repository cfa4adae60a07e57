#!/usr/bin/env bash
# End-to-end delivery benchmark with Postfix's smtp-source and smtp-sink.
#
# Mode `throughput` (the default): for 1 KiB and 100 KiB messages it runs
#   1. smtp-source -> smtp-sink directly: the protocol limit of this machine;
#   2. smtp-source -> petrel -> smtp-sink, petrel relaying everything to the
#      sink ([[route]] domain = "*");
#   3. smtp-source -> Postfix -> smtp-sink, a private Postfix instance with
#      relayhost = the sink, when Postfix can be started here;
# each on a fresh smtp-sink, timed from the start of smtp-source until the
# sink has received every message. For petrel it also reports its CPU time
# per delivered message and its peak RSS, and checks that petrel's spool
# ends up empty: every message was delivered, none twice.
#
# Mode `queue-down`: petrel routes everything to a port where nothing
# listens (connection refused) with a long retry, takes QUEUED messages
# with smtp-source and reports its memory with all of them queued, its CPU
# use while they wait, its shutdown and restart (recovery) times and the
# spool's count.
#
# Usage: benches/delivery.sh [throughput|queue-down]   (from any directory)
# Environment:
#   MESSAGES=50000          messages per throughput run
#   SESSIONS=20             parallel smtp-source sessions, and the
#                           connections per destination of petrel and Postfix
#   SIZES="1024 102400"     message body sizes (smtp-source -l)
#   ROUNDS=3                direct and petrel runs per size (medians); Postfix runs once
#   SOURCE_FLAGS=-d         smtp-source mode: -d = one connection per session
#                           for all its messages; "" = a new one per message
#   SHARDS=CPUs-1           petrel's shards (see lib.sh; 0 = one per CPU)
#   TOOL_CPUS=              CPUs (taskset list) for smtp-source and smtp-sink;
#                           default: those no shard has (see lib.sh)
#   EGRESS=                 "pool": petrel sends from a pool of three sources
#                           (127.0.0.2, .3, .4, weights 1) with message and
#                           connection rates set far above what the run
#                           reaches, and 127.0.0.2 in a warm-up whose day
#                           allows a billion messages, so that source
#                           choice, shaping and warm-up counting run on
#                           every message without ever holding one back
#   OPS=on                  "on": the admin endpoint (so metrics are kept)
#                           on ADMIN_ADDR and the accounting log in the
#                           run's directory; "metrics": the endpoint
#                           only; "off": neither; "compare": petrel runs
#                           twice a round, with both off and with both on
#                           (in turn first), and the table gives both and
#                           what metrics and accounting cost
#   DKIM=                   "rsa" or "ed25519": petrel signs every message
#                           (From: FROM's domain) with a key of that
#                           algorithm (2048 bits for RSA) made by
#                           `petrel dkim keygen` in the run's directory;
#                           "compare": petrel runs twice a round, unsigned
#                           and signed with DKIM_ALGORITHM (default rsa),
#                           and a second table gives what signing costs;
#                           "compare-threads": petrel signs with
#                           DKIM_ALGORITHM twice a round, on the shard
#                           (DKIM_THREADS=0) and on signing threads
#                           (DKIM_THREADS, or one per shard if it is 0),
#                           and a second table sets them side by side
#   DKIM_THREADS=0          [signing] threads when petrel signs: 0 = on the
#                           shard, N = on N petrel-dkim threads
#   LOCAL=                  "maildir" or "lmtp": each round also runs petrel
#                           with the recipients' domain hosted here
#                           ([[domain]] local.test), delivered into
#                           Maildirs under the run's directory, or over LMTP
#                           to a private Dovecot the script starts
#                           (`dovecot -F -c FILE`, LMTP on LMTP_ADDR), and
#                           a second table sets it beside the relay run
#   LMTP_ADDR=127.0.0.6:2424
#   ADMIN_ADDR=127.0.0.1:9925
#   QUEUED=1000000          messages queued in queue-down mode
#   QUEUED_SIZE=1024        their body size
#   SINK_ADDR=127.0.0.2:2526, PETREL_ADDR=127.0.0.3:2525,
#   POSTFIX_ADDR=127.0.0.4:2527, DOWN_ADDR=127.0.0.5:2528
#   DELIVERY_TIMEOUT=1800   seconds to wait for the sink to have everything
#   PETREL_BENCH_DIR=target/   where spools and Postfix's queue go (not /tmp)
#   SMTP_SOURCE, SMTP_SINK, POSTFIX   paths of the Postfix tools (/usr/sbin/...)
# See benches/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"

MODE=${1:-throughput}
MESSAGES=${MESSAGES:-50000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
EGRESS=${EGRESS:-}
OPS=${OPS:-on}
DKIM=${DKIM:-}
DKIM_ALGORITHM=${DKIM_ALGORITHM:-rsa}
DKIM_THREADS=${DKIM_THREADS:-0}
LOCAL=${LOCAL:-}
LMTP_ADDR=${LMTP_ADDR:-127.0.0.6:2424}
DOVECOT=${DOVECOT:-/usr/sbin/dovecot}
ADMIN_ADDR=${ADMIN_ADDR:-127.0.0.1:9925}
SIZES=${SIZES:-1024 102400}
SOURCE_FLAGS=${SOURCE_FLAGS--d}
QUEUED=${QUEUED:-1000000}
QUEUED_SIZE=${QUEUED_SIZE:-1024}
SINK_ADDR=${SINK_ADDR:-127.0.0.2:2526}
PETREL_ADDR=${PETREL_ADDR:-127.0.0.3:2525}
POSTFIX_ADDR=${POSTFIX_ADDR:-127.0.0.4:2527}
DOWN_ADDR=${DOWN_ADDR:-127.0.0.5:2528}
DELIVERY_TIMEOUT=${DELIVERY_TIMEOUT:-1800}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
POSTFIX=${POSTFIX:-/usr/sbin/postfix}
BENCH_DIR=${PETREL_BENCH_DIR:-$repo/target}
FROM=from@example.test
TO=to@example.test

die() {
    echo "delivery.sh: $*" >&2
    exit 1
}

case $MODE in
throughput | queue-down) ;;
*) die "unknown mode '$MODE': throughput or queue-down" ;;
esac

build_petrel_and_check_tools

mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/petrel-delivery-bench.XXXXXX")
# Postfix's daemons and smtp-sink drop root; they must reach their files.
chmod 755 "$work"
started_pids=()
postfix_conf=""

cleanup() {
    if [[ -n $postfix_conf ]]; then
        "$POSTFIX" -c "$postfix_conf" abort >/dev/null 2>&1 || true
    fi
    stop_started
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tick_hz=$(getconf CLK_TCK)

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# Busy time of the whole machine (every process, the kernel's threads and
# interrupts), in clock ticks: the first line of /proc/stat less idle and
# iowait.
host_ticks() {
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# Microseconds of CPU per message from a tick difference.
us_per_msg() {
    awk -v t="$1" -v hz="$tick_hz" -v n="$2" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'
}

status_kib() {
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

spool_queued() {
    "$petrel" spool inspect "$1" | awk -F': ' '/^total queued messages:/ { print $2 }'
}

# The functions below set globals instead of printing, so that they never run
# in a subshell: a failure then exits the script itself and the EXIT trap
# stops every process they started.

# Starts a fresh smtp-sink on SINK_ADDR; sets sink_pid. With `counted`, it
# shows its counters (-c), which tell when a relay has delivered everything;
# they cost the sink a write per message, so the direct run goes without.
# (Its -M, exit after N messages, does not do: it exits before answering
# the last one.)
start_sink() {
    local flags=()
    [[ $(id -u) == 0 ]] && flags=(-u nobody)
    sink_counting=${1:-}
    [[ -n $sink_counting ]] && flags+=(-c)
    require_free "$SINK_ADDR"
    "${tool_pin[@]}" "$SMTP_SINK" "${flags[@]}" "$SINK_ADDR" 1000 >"$work/sink.out" 2>&1 &
    sink_pid=$!
    started_pids+=("$sink_pid")
    wait_listening "$SINK_ADDR" 1 "$sink_pid" || die "smtp-sink did not start on $SINK_ADDR"
}

stop_sink() {
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
}

# Sets sink_count: the messages smtp-sink has received, from the last
# complete "sess=N quit=N mesg=N\r" of its -c counters.
read_sink_count() {
    local data
    data=$(tail -c 100 "$work/sink.out" 2>/dev/null || true)
    data=${data%$'\r'*}
    sink_count=${data##*mesg=}
    [[ $sink_count =~ ^[0-9]+$ ]] || sink_count=0
}

# Sets t_done: when the sink has every message. Without counters,
# smtp-source got the sink's 250 for each of them, so that is when it
# finished; with them, when they reach MESSAGES (polled every 0.1 s).
# Fails after DELIVERY_TIMEOUT seconds.
wait_sink() {
    local what=$1 deadline
    if [[ -z $sink_counting ]]; then
        t_done=$t_sent
        return 0
    fi
    deadline=$(($(date +%s) + DELIVERY_TIMEOUT))
    while :; do
        read_sink_count
        ((sink_count >= MESSAGES)) && break
        (($(date +%s) < deadline)) ||
            die "$what: smtp-sink has $sink_count of $MESSAGES messages after ${DELIVERY_TIMEOUT}s"
        sleep 0.1
    done
    t_done=$(now)
}

# Runs smtp-source against ADDR with N messages of SIZE; sets t_sent.
run_source() {
    local addr=$1 n=$2 size=$3
    # shellcheck disable=SC2086
    "${tool_pin[@]}" "$SMTP_SOURCE" $SOURCE_FLAGS -s "$SESSIONS" -m "$n" -l "$size" \
        -f "$FROM" -t "$TO" "$addr" ||
        die "smtp-source against $addr failed (size $size, flags '$SOURCE_FLAGS')"
    t_sent=$(now)
}

# Sends MESSAGES of SIZE to ADDR and waits for the sink to have them all;
# sets timed_rate (msg/s, from the start of smtp-source until then),
# timed_accept_rate (msg/s, until smtp-source is done) and timed_host_us
# (busy CPU of the whole machine per message).
timed_to_sink() {
    local addr=$1 size=$2 what=$3 t0 h0
    h0=$(host_ticks)
    t0=$(now)
    run_source "$addr" "$MESSAGES" "$size"
    wait_sink "$what"
    timed_host_us=$(us_per_msg $(($(host_ticks) - h0)) "$MESSAGES")
    timed_rate=$(rate "$MESSAGES" "$(elapsed "$t0" "$t_done")")
    timed_accept_rate=$(rate "$MESSAGES" "$(elapsed "$t0" "$t_sent")")
}

# Writes petrel's config to FILE: spool in SPOOL, everything routed to
# RELAY, more [delivery] keys in EXTRA; with EGRESS=pool, the sources,
# the pool and the rates (see the header).
write_config() {
    local egress=""
    if [[ $EGRESS == pool ]]; then
        egress="
[[source]]
name = \"s2\"
address = \"127.0.0.2\"
warmup = { start = \"$(date -u +%F)\", daily = [1000000000] }

[[source]]
name = \"s3\"
address = \"127.0.0.3\"

[[source]]
name = \"s4\"
address = \"127.0.0.4\"

[[pool]]
name = \"bench\"
sources = [{ source = \"s2\" }, { source = \"s3\" }, { source = \"s4\" }]"
    fi
    local rates=""
    [[ $EGRESS == pool ]] && rates="max_message_rate = \"10000000/s\"
max_connection_rate = \"1000000/s\""
    local ops="[admin]
address = \"\""
    [[ $OPS == metrics ]] && ops="[admin]
address = \"$ADMIN_ADDR\""
    [[ $OPS == on ]] && ops="[admin]
address = \"$ADMIN_ADDR\"

[accounting]
path = \"$(dirname "$1")/acct.csv\""
    local dkim=""
    if [[ -n $DKIM ]]; then
        local keys
        keys="$(dirname "$1")/dkim"
        "$petrel" dkim keygen --algorithm "$DKIM" --domain "${FROM#*@}" --selector bench \
            --out "$keys" >/dev/null || die "petrel dkim keygen failed"
        dkim="[signing]
key_dir = \"$keys\"
threads = $DKIM_THREADS"
    fi
    write_petrel_config "$1" "$2" "[delivery]
max_connections_per_destination = $SESSIONS
$rates
$4

[[route]]
domain = \"*\"
relay = \"$3\"

$ops
$dkim
$egress"
}

# Starts petrel with CONFIG; sets petrel_pid and petrel_log.
start_petrel() {
    local config=$1
    petrel_log=$work/petrel.log
    require_free "$PETREL_ADDR"
    PETREL_LOG=warn "$petrel" run --config "$config" 2>>"$petrel_log" &
    petrel_pid=$!
    started_pids+=("$petrel_pid")
    wait_listening "$PETREL_ADDR" "$shard_count" "$petrel_pid" ||
        die "petrel did not start on $PETREL_ADDR; its log: $(cat "$petrel_log")"
}

# SIGTERM; petrel must exit 0. Sets stop_secs.
stop_petrel() {
    local rc=0 t0
    t0=$(now)
    kill -TERM "$petrel_pid"
    wait "$petrel_pid" || rc=$?
    stop_secs=$(elapsed "$t0" "$(now)")
    ((rc == 0)) || die "petrel exited with status $rc; its log: $(cat "$petrel_log")"
}

# Sets timed_rate, timed_accept_rate, timed_host_us, cpu_us, rss_mib and
# anon_mib.
run_petrel() {
    local size=$1 dir=$work/petrel ticks0 ticks1 queued i
    rm -rf "$dir"
    mkdir -p "$dir"
    write_config "$dir/petrel.toml" "$dir/spool" "$SINK_ADDR" ""
    start_sink counted
    start_petrel "$dir/petrel.toml"
    ticks0=$(cpu_ticks "$petrel_pid")
    timed_to_sink "$PETREL_ADDR" "$size" "petrel"
    ticks1=$(cpu_ticks "$petrel_pid")
    rss_mib=$(mib "$(status_kib "$petrel_pid" VmHWM)")
    anon_mib=$(mib "$(status_kib "$petrel_pid" RssAnon)")
    # The status records follow the sink's 250s closely.
    for ((i = 0; i < 300; i++)); do
        queued=$(spool_queued "$dir/spool")
        [[ $queued == 0 ]] && break
        sleep 0.1
    done
    stop_petrel
    queued=$(spool_queued "$dir/spool")
    read_sink_count
    stop_sink
    echo "  petrel: smtp-sink counted $sink_count of $MESSAGES messages, the spool holds $queued queued"
    [[ $queued == 0 ]] || die "FAILED: every message reached smtp-sink but the spool still holds $queued"
    ((sink_count == MESSAGES)) || die "FAILED: smtp-sink got $sink_count messages for $MESSAGES sent"
    grep -v '^$' "$petrel_log" | tail -5 | sed 's/^/  petrel log: /' || true
    rm -rf "$dir" "$petrel_log"
    cpu_us=$(us_per_msg $((ticks1 - ticks0)) "$MESSAGES")
}

# Writes a private Dovecot under DIR whose LMTP listens on LMTP_ADDR and
# stores into Maildirs under DIR/mail, every user accepted. It runs as one
# unprivileged user throughout (no privileged port, no system service): the
# invoking user, or, when that is root (Dovecot refuses to deliver mail as
# root), the `dovecot` user the package makes, started by dovecot_command.
write_dovecot() {
    local dir=$1 user group
    user=$(id -un) group=$(id -gn)
    if [[ $(id -u) == 0 ]]; then
        user=dovecot group=dovecot
    fi
    mkdir -p "$dir/run" "$dir/state" "$dir/mail"
    cat >"$dir/dovecot.conf" <<EOF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = lmtp
ssl = no
listen = ${LMTP_ADDR%:*}
default_login_user = $user
default_internal_user = $user
default_internal_group = $group
mail_location = maildir:$dir/mail/%n
passdb {
  driver = static
  args = nopassword
}
userdb {
  driver = static
  args = home=$dir/mail/%n allow_all_users=yes
}
service lmtp {
  inet_listener lmtp {
    address = ${LMTP_ADDR%:*}
    port = ${LMTP_ADDR##*:}
  }
}
service anvil {
  chroot =
}
EOF
}

# The command that starts Dovecot: as root, through setpriv as the dovecot
# user, keeping the file capabilities to read and write the run's
# directory, which root owns.
dovecot_command() {
    if [[ $(id -u) == 0 ]]; then
        local caps=+dac_override,+dac_read_search,+fowner
        echo setpriv --reuid=dovecot --regid=dovecot --clear-groups \
            --inh-caps=$caps --ambient-caps=$caps "$DOVECOT"
    else
        echo "$DOVECOT"
    fi
}

# Files delivered into the Maildirs under DIR (new/ of every user).
maildir_count() {
    find "$1" -path '*/new/*' -type f 2>/dev/null | wc -l
}

# Like run_petrel, with the recipients' domain hosted here (LOCAL=maildir
# or lmtp): waits for the spool to be empty, then counts the files.
run_local() {
    local size=$1 dir=$work/petrel ticks0 ticks1 queued i t0 h0 domain dovecot_pid="" files
    rm -rf "$dir"
    mkdir -p "$dir/mail"
    domain="[[domain]]
name = \"local.test\"
verify = \"none\""
    if [[ $LOCAL == lmtp ]]; then
        [[ -x $DOVECOT ]] || die "LOCAL=lmtp needs Dovecot ($DOVECOT)"
        write_dovecot "$dir/dovecot"
        require_free "$LMTP_ADDR"
        # shellcheck disable=SC2046 # one word per argument
        $(dovecot_command) -F -c "$dir/dovecot/dovecot.conf" &
        dovecot_pid=$!
        started_pids+=("$dovecot_pid")
        wait_listening "$LMTP_ADDR" 1 "$dovecot_pid" ||
            die "Dovecot did not start; its log: $(cat "$dir/dovecot/dovecot.log" 2>/dev/null)"
        domain+="
delivery = \"lmtp\"
lmtp = \"$LMTP_ADDR\""
    else
        domain+="
delivery = \"maildir\"
maildir_root = \"$dir/mail\""
    fi
    write_config "$dir/petrel.toml" "$dir/spool" "$SINK_ADDR" ""
    printf '\n%s\n' "$domain" >>"$dir/petrel.toml"
    start_petrel "$dir/petrel.toml"
    ticks0=$(cpu_ticks "$petrel_pid")
    h0=$(host_ticks)
    t0=$(now)
    TO=to@local.test run_source "$PETREL_ADDR" "$MESSAGES" "$size"
    for ((i = 0; i < DELIVERY_TIMEOUT * 10; i++)); do
        queued=$(spool_queued "$dir/spool")
        [[ $queued == 0 ]] && break
        sleep 0.1
    done
    t_done=$(now)
    ticks1=$(cpu_ticks "$petrel_pid")
    timed_host_us=$(us_per_msg $(($(host_ticks) - h0)) "$MESSAGES")
    timed_rate=$(rate "$MESSAGES" "$(elapsed "$t0" "$t_done")")
    timed_accept_rate=$(rate "$MESSAGES" "$(elapsed "$t0" "$t_sent")")
    rss_mib=$(mib "$(status_kib "$petrel_pid" VmHWM)")
    anon_mib=$(mib "$(status_kib "$petrel_pid" RssAnon)")
    stop_petrel
    if [[ -n $dovecot_pid ]]; then
        kill -TERM "$dovecot_pid" 2>/dev/null || true
        wait "$dovecot_pid" 2>/dev/null || true
    fi
    files=$(maildir_count "$dir")
    echo "  petrel ($LOCAL): $files files in the Maildirs for $MESSAGES messages, the spool holds $queued queued"
    [[ $queued == 0 ]] || die "FAILED: the spool still holds $queued"
    ((files == MESSAGES)) || die "FAILED: $files files delivered for $MESSAGES sent"
    grep -v '^$' "$petrel_log" | tail -5 | sed 's/^/  petrel log: /' || true
    rm -rf "$dir" "$petrel_log"
    cpu_us=$(us_per_msg $((ticks1 - ticks0)) "$MESSAGES")
}

# Writes a private Postfix instance under $work/postfix: smtpd on
# POSTFIX_ADDR, everything relayed to the sink, no local delivery, no
# chroot, its log in a file. Sets postfix_conf and postfix_log.
write_postfix() {
    local dir=$work/postfix
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data"
    chown postfix "$dir/data"
    postfix_log=$dir/maillog
    cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $postfix_log
maillog_file_prefixes = $dir
myhostname = postfix.bench.test
mydestination =
relayhost = [${SINK_ADDR%:*}]:${SINK_ADDR##*:}
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_relay_restrictions = permit_mynetworks, reject
local_transport = error:5.1.1 no local delivery here
alias_maps =
alias_database =
biff = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = $SESSIONS
smtp_destination_concurrency_limit = $SESSIONS
default_process_limit = $((4 * SESSIONS + 20))
EOF
    # Debian's services, without chroot (it would need copies of /etc files
    # in the queue directory) and with smtpd only on POSTFIX_ADDR.
    cat >"$dir/conf/master.cf" <<EOF
$POSTFIX_ADDR inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    postfix_conf=$dir/conf
}

# Starts the private Postfix, or sets postfix_skip to the reason it cannot.
start_postfix() {
    postfix_skip=""
    if [[ ! -x $POSTFIX ]]; then
        postfix_skip="$POSTFIX not found"
    elif [[ $(id -u) != 0 ]]; then
        postfix_skip="Postfix must be started as root"
    elif ! id postfix >/dev/null 2>&1; then
        postfix_skip="no postfix user"
    fi
    [[ -z $postfix_skip ]] || return 0
    require_free "$POSTFIX_ADDR"
    write_postfix
    # Postfix reports to syslog until it has read main.cf, and to its
    # maillog_file after.
    if ! "$POSTFIX" -c "$postfix_conf" check >/dev/null 2>&1 ||
        ! "$POSTFIX" -c "$postfix_conf" start >/dev/null 2>&1; then
        postfix_skip="postfix check/start failed: $(tail -3 "$postfix_log" 2>/dev/null | tr '\n' ' ')"
        "$POSTFIX" -c "$postfix_conf" abort >/dev/null 2>&1 || true
        postfix_conf=""
        return 0
    fi
    local i
    for ((i = 0; i < 200; i++)); do
        (($(ss -Hltn "src $POSTFIX_ADDR" | wc -l) >= 1)) && return 0
        sleep 0.05
    done
    postfix_skip="Postfix did not listen on $POSTFIX_ADDR: $(tail -3 "$postfix_log" | tr '\n' ' ')"
    stop_postfix
}

stop_postfix() {
    "$POSTFIX" -c "$postfix_conf" stop >/dev/null 2>&1 || true
    local i pid_file=$work/postfix/queue/pid/master.pid
    for ((i = 0; i < 200; i++)); do
        [[ -s $pid_file ]] && kill -0 "$(tr -d ' ' <"$pid_file")" 2>/dev/null || break
        sleep 0.05
    done
    postfix_conf=""
    rm -rf "$work/postfix"
}

# Sets timed_rate and timed_host_us, or postfix_skip.
run_postfix() {
    local size=$1
    start_sink counted
    start_postfix
    if [[ -z $postfix_skip ]]; then
        timed_to_sink "$POSTFIX_ADDR" "$size" "Postfix"
        stop_postfix
    fi
    stop_sink
}

# Sets the variable a variant names ("OPS=off", "DKIM=rsa"; "" = none).
apply_variant() {
    [[ -n $1 ]] && printf -v "${1%%=*}" '%s' "${1#*=}"
    return 0
}

throughput() {
    echo "petrel delivery benchmark: $MESSAGES messages per run, $SESSIONS sessions," \
        "smtp-source flags '$SOURCE_FLAGS', $shard_count shards, $(nproc) CPUs, tools on CPUs '${TOOL_CPUS:-any}'," \
        "spool under $BENCH_DIR, OPS=$OPS, DKIM=$DKIM, DKIM_THREADS=$DKIM_THREADS"
    echo "smtp-sink on $SINK_ADDR, petrel on $PETREL_ADDR, Postfix on $POSTFIX_ADDR"
    # The petrel runs of a round: one, or the two that a compare sets
    # side by side (what they differ in, and the target of the difference).
    local variants=("") compared="" target="" off=off on=on
    if [[ $OPS == compare && $DKIM == compare* ]]; then
        die "OPS=compare and DKIM=$DKIM cannot be run together"
    elif [[ $OPS == compare ]]; then
        variants=("OPS=off" "OPS=on") compared="metrics and accounting"
        target="target: metrics and accounting cost under 3%"
    elif [[ $DKIM == compare ]]; then
        variants=("DKIM=" "DKIM=$DKIM_ALGORITHM") compared="DKIM signing ($DKIM_ALGORITHM)"
    elif [[ $DKIM == compare-threads ]]; then
        local threads=$DKIM_THREADS
        ((threads > 0)) || threads=$shard_count
        variants=("DKIM_THREADS=0" "DKIM_THREADS=$threads") off=shard on="$threads thr"
        compared="DKIM signing ($DKIM_ALGORITHM) on the shard and on $threads signing threads"
        # Both variants sign.
        DKIM=$DKIM_ALGORITHM
    fi
    if [[ -n $LOCAL && ${#variants[@]} == 2 ]]; then
        die "LOCAL= cannot be run with OPS=compare or DKIM=compare"
    elif [[ -n $LOCAL ]]; then
        [[ $LOCAL == maildir || $LOCAL == lmtp ]] || die "LOCAL must be maildir or lmtp"
        variants=("LOCAL=" "LOCAL=$LOCAL") compared="local delivery ($LOCAL) beside relaying"
    fi
    local rows=() compare_rows=() size label ratio pf_rate pf_ratio round directs variant order
    local saved_ops=$OPS saved_dkim=$DKIM saved_threads=$DKIM_THREADS saved_local=$LOCAL last
    local -A petrels cpus rsss
    for size in $SIZES; do
        label="$((size / 1024)) KiB"
        directs=()
        petrels=() cpus=() rsss=()
        for ((round = 1; round <= ROUNDS; round++)); do
            echo "case: $label, round $round of $ROUNDS"
            start_sink
            timed_to_sink "$SINK_ADDR" "$size" "direct"
            stop_sink
            directs+=("$timed_rate")
            echo "  direct: $timed_rate msg/s (host CPU $timed_host_us us/msg)"
            # Compared variants take turns at going first.
            order=("${variants[@]}")
            ((round % 2 == 0 && ${#variants[@]} == 2)) && order=("${variants[1]}" "${variants[0]}")
            for variant in "${order[@]}"; do
                apply_variant "$variant"
                if [[ -n $LOCAL ]]; then run_local "$size"; else run_petrel "$size"; fi
                OPS=$saved_ops DKIM=$saved_dkim DKIM_THREADS=$saved_threads LOCAL=$saved_local
                petrels[x$variant]+="$timed_rate " cpus[x$variant]+="$cpu_us " rsss[x$variant]+="$rss_mib "
                echo "  petrel${variant:+ ($variant)}: $timed_rate msg/s end to end, accepted at" \
                    "$timed_accept_rate msg/s; $cpu_us us CPU/msg; peak RSS $rss_mib MiB," \
                    "anon $anon_mib MiB; host CPU $timed_host_us us/msg"
            done
        done
        direct_rate=$(median "${directs[@]}")
        last=x${variants[-1]}
        # shellcheck disable=SC2086
        petrel_rate=$(median ${petrels[$last]})
        ratio=$(awk -v p="$petrel_rate" -v s="$direct_rate" 'BEGIN { printf "%.2f", p / s }')
        run_postfix "$size"
        if [[ -n $postfix_skip ]]; then
            echo "  Postfix: not measured: $postfix_skip"
            pf_rate=-
            pf_ratio=-
        else
            echo "  Postfix: $timed_rate msg/s (host CPU $timed_host_us us/msg)"
            pf_rate=$timed_rate
            pf_ratio=$(awk -v p="$petrel_rate" -v s="$timed_rate" 'BEGIN { printf "%.1f", p / s }')
        fi
        # shellcheck disable=SC2086
        rows+=("$(printf '%-8s %12s %12s %8s %13s %13s %8s %11s %9s' "$label" "$direct_rate" \
            "$petrel_rate" "$ratio" "$(range ${petrels[$last]})" "$pf_rate" "$pf_ratio" \
            "$(median ${cpus[$last]})" "$(maximum ${rsss[$last]})")")
        if [[ -n $compared ]]; then
            local a=x${variants[0]} b=x${variants[1]}
            # shellcheck disable=SC2086
            compare_rows+=("$(awk -v label="$label" \
                -v r0="$(median ${petrels[$a]})" -v r1="$(median ${petrels[$b]})" \
                -v c0="$(median ${cpus[$a]})" -v c1="$(median ${cpus[$b]})" \
                -v pr="$(paired ${petrels[$a]} -- ${petrels[$b]})" \
                -v pc="$(paired ${cpus[$a]} -- ${cpus[$b]})" \
                -v up="$(rounds_above ${cpus[$a]} -- ${cpus[$b]})" \
                'BEGIN { printf "%-8s %12s %12s %+9.1f%% %13s %13s %+9.1f%% %+10.1f%% %+10.1f%% %8s",
                    label, r0, r1, (r1 / r0 - 1) * 100, c0, c1, (c1 / c0 - 1) * 100,
                    pr * 100, pc * 100, up }')")
        fi
    done
    echo
    echo "direct and petrel: medians of $ROUNDS rounds (petrel range: slowest-fastest); Postfix: one run"
    [[ -n $compared ]] && echo "petrel with ${variants[1]}"
    printf '%-8s %12s %12s %8s %13s %13s %8s %11s %9s\n' case "direct msg/s" "petrel msg/s" \
        "/direct" "petrel range" "Postfix msg/s" "/Postfix" "CPU us/msg" "RSS MiB"
    printf '%s\n' "${rows[@]}"
    echo "targets: petrel/direct >= 0.40 and petrel/Postfix >= 8 for 1 KiB"
    if [[ -n $compared ]]; then
        echo
        echo "$compared: medians of $ROUNDS rounds each, $off and $on, measured alongside"
        printf '%-8s %12s %12s %10s %13s %13s %10s %11s %11s %8s\n' case "$off msg/s" \
            "$on msg/s" "rate diff" "$off CPU us" "$on CPU us" "CPU diff" "paired rate" \
            "paired CPU" "CPU up"
        printf '%s\n' "${compare_rows[@]}"
        echo "paired: the median of each round's own $on/$off ratio (the two runs of a round are"
        echo "back to back, so this takes out the machine's drift between rounds); CPU up: the"
        echo "rounds whose $on run took more CPU per message than its $off run"
        [[ -n $target ]] && echo "$target"
    fi
    return 0
}

queue_down() {
    local dir=$work/petrel t0 t1 ticks0 ticks1 queued secs
    echo "petrel queue-down benchmark: $QUEUED messages of $QUEUED_SIZE bytes for a" \
        "destination that refuses connections ($DOWN_ADDR), $SESSIONS sessions," \
        "smtp-source flags '$SOURCE_FLAGS', $shard_count shards, spool under $BENCH_DIR"
    require_free "$DOWN_ADDR"
    mkdir -p "$dir"
    write_config "$dir/petrel.toml" "$dir/spool" "$DOWN_ADDR" \
        'retry = ["1h"]
max_age = "5d"
connect_timeout = "5s"'
    start_petrel "$dir/petrel.toml"
    t0=$(now)
    run_source "$PETREL_ADDR" "$QUEUED" "$QUEUED_SIZE"
    secs=$(elapsed "$t0" "$t_sent")
    echo "  queued $QUEUED in ${secs}s ($(rate "$QUEUED" "$secs") msg/s)"
    echo "  petrel with $QUEUED queued: VmRSS $(mib "$(status_kib "$petrel_pid" VmRSS)") MiB" \
        "(RssAnon $(mib "$(status_kib "$petrel_pid" RssAnon)") MiB," \
        "RssFile $(mib "$(status_kib "$petrel_pid" RssFile)") MiB)," \
        "peak $(mib "$(status_kib "$petrel_pid" VmHWM)") MiB"
    # The last acknowledgements leave a moment of work behind them (the
    # final group commits, the queue taking the last messages): wait until
    # a whole second passes with at most one tick of CPU (up to 10 s), so
    # that the window measures waiting, not the end of receiving.
    settled=0
    for _ in $(seq 10); do
        ticks0=$(cpu_ticks "$petrel_pid")
        sleep 1
        (($(cpu_ticks "$petrel_pid") - ticks0 <= 1)) && { settled=1; break; }
    done
    ((settled)) || echo "  (petrel was still busy 10 s after the last message was queued)"
    ticks0=$(cpu_ticks "$petrel_pid")
    sleep 10
    ticks1=$(cpu_ticks "$petrel_pid")
    echo "  CPU while they wait: $(awk -v t="$((ticks1 - ticks0))" -v hz="$tick_hz" \
        'BEGIN { printf "%.0f", t * 1000 / hz / 10 }') ms per second"
    stop_petrel
    echo "  SIGTERM to exit: ${stop_secs}s"
    t0=$(now)
    queued=$(spool_queued "$dir/spool")
    echo "  petrel spool inspect: $queued queued messages ($(elapsed "$t0" "$(now)")s)," \
        "spool $(du -sh "$dir/spool" | cut -f1)"
    [[ $queued == "$QUEUED" ]] || die "FAILED: $QUEUED messages were acknowledged but the spool holds ${queued:-?}"
    t0=$(now)
    start_petrel "$dir/petrel.toml"
    t1=$(now)
    echo "  restart until listening: $(elapsed "$t0" "$t1")s; then VmRSS" \
        "$(mib "$(status_kib "$petrel_pid" VmRSS)") MiB (RssAnon" \
        "$(mib "$(status_kib "$petrel_pid" RssAnon)") MiB)"
    stop_petrel
    grep -v '^$' "$petrel_log" | tail -5 | sed 's/^/  petrel log: /' || true
}

t_start=$(now)
case $MODE in
throughput) throughput ;;
queue-down) queue_down ;;
esac
echo "total time: $(elapsed "$t_start" "$(now)")s"

#!/usr/bin/env bash
# Spool benchmark: the disk's own limits (dd), then benches/spool.rs
# (durable append throughput with group commit, recovery of a large spool).
#
# Usage: benches/spool.sh [--quick] [--seconds S] [--recovery-messages N]
# Files go under $PETREL_BENCH_DIR (default: target/ of this repository,
# never /tmp, which may be tmpfs) and are removed at the end. About 3 GB
# of free space is needed there. See benches/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PETREL_BENCH_DIR="${PETREL_BENCH_DIR:-$PWD/target}"
mkdir -p "$PETREL_BENCH_DIR"

# Build first, so that compiling does not run between dd and the bench.
cargo bench --bench spool --no-run

work=$(mktemp -d "$PETREL_BENCH_DIR/petrel-dd.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "dd if=/dev/zero of=FILE bs=1M count=1024 conv=fdatasync in $PETREL_BENCH_DIR"
dd_line=$(dd if=/dev/zero of="$work/dd.img" bs=1M count=1024 conv=fdatasync 2>&1 | tail -n 1)
rm -f "$work/dd.img"
echo "  $dd_line"

PETREL_BENCH_DD="$dd_line" cargo bench --bench spool -- "$@"

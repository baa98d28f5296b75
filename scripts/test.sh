#!/usr/bin/env bash
# Installs what podnet's tests need on Debian 12 and runs them (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "podnet's tests create network namespaces: run this as root (sudo $0)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  iproute2 nftables iputils-ping containernetworking-plugins \
  etcd-server protobuf-compiler libprotobuf-dev openssl ca-certificates iperf3 ethtool conntrack \
  bind9-dnsutils curl chromium >/dev/null

# The kubectl tests use the machine's kubectl; Debian's is the fallback.
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get install -y -q --no-install-recommends kubernetes-client >/dev/null
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# A one-off build gains nothing from incremental state, which would double the disk it needs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --all-targets
# The agent's pod-runtime tests run these binaries; built above, so the tests do not run
# cargo themselves (which would rebuild them while other tests execute them).
export PODNET_TEST_BIN_DIR="$PWD/target/debug"

# A quick smoke run of the CNI benchmark (the real run is in BENCHMARKS.md);
# it only reports, the figures are judged there.
PODNET_BENCH_PODS=5 cargo bench -p podnet-cni --bench add_del
PODNET_BENCH_SERVICES=50 PODNET_BENCH_PODS=100 PODNET_BENCH_PACED=20 cargo bench -p podnet-apiserver --bench api

cargo nextest run --workspace --no-fail-fast "$@"

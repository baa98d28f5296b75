#!/usr/bin/env bash
# The README's first command. On Debian 12 with a Rust toolchain, as root: installs what
# building podnet needs (etcd-client's build runs protoc, which needs protobuf's own .proto
# files too), builds podnet and podnet-cni, and runs the lab demo. Running podnet needs no
# other package: it makes links, routes and nftables rules over netlink, without ip or nft.
# Arguments go to `podnet lab demo` (e.g. --backend udp, --proxy-mode userspace, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the demo builds a lab of network namespaces: run this as root (sudo $0)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not on root's PATH: install Rust (https://rustup.rs) or run with the PATH of a user who has it (sudo env PATH=\"\$PATH\" $0)" >&2
  exit 1
fi

if ! command -v protoc >/dev/null 2>&1 || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
  echo "installing the build's prerequisites: protobuf-compiler libprotobuf-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi

cargo build --release -p podnet -p podnet-cni
exec ./target/release/podnet lab demo "$@"

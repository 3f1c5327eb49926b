#!/usr/bin/env bash
# Installs the Debian packages ftpair needs, and only those missing.
set -euo pipefail
PKGS=(
  build-essential pkg-config meson ninja-build clang libclang-rt-14-dev
  dpdk dpdk-dev libdpdk-dev
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libvirt-dev libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  libgtest-dev libgmock-dev libbenchmark-dev
  libmicrohttpd-dev libcli11-dev libyaml-cpp-dev libspdlog-dev nlohmann-json3-dev libssl-dev
  prometheus python3-grpcio python3-scapy python3-yaml nfdump
  iperf3 tcpreplay gnuplot-nox iproute2 nftables ethtool bridge-utils procps psmisc curl openssl
  traceroute iputils-tracepath iputils-ping hping3 util-linux
  libxml2-dev linux-image-cloud-amd64
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: need root to install packages" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Install the Debian packages the test suite uses (skipping what is already there):
#   ovmf            real OVMF images (launch digests cross-checked with sev-snp-measure)
#   qemu-system-x86 a real QEMU (format comparisons, bench/)
#   gdb             the debugger peer of the gdb stub tests
#   systemd         systemd-analyze verify, systemd-socket-activate, systemd-sysusers
#                   (tests/ops: units, socket activation, the sysusers entry)
#   chromium        headless rendering of the HTTP status page (tests/http)
#   binutils        as/ld: the tiny test firmwares that put a real QEMU in long mode (tests/hmp, tests/gdb)
set -euo pipefail
pkgs=(ovmf qemu-system-x86 gdb systemd chromium binutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Install what the tests and the demo need on a fresh Debian machine.
#
# System packages come from Debian (only when missing, and only when we can:
# as root, or with passwordless sudo). A package we need but cannot install
# is an error with the command to run, never something the tests skip.
set -euo pipefail

# Debian packages -> a command each one provides, to tell whether it is there.
declare -A NEED=(
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_passwd
  [influxdb]=/usr/bin/influxd
  [postgresql]=/usr/bin/pg_config
  [nodejs]=/usr/bin/node
  [chromium]=/usr/bin/chromium
  [openssl]=/usr/bin/openssl
  [iproute2]=/usr/sbin/ip
  [postgresql-client]=/usr/bin/pg_dump
  [fonts-ipafont-gothic]=/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf
  [poppler-utils]=/usr/bin/pdftoppm
  [openssh-server]=/usr/sbin/sshd
)

missing=()
for pkg in "${!NEED[@]}"; do
  # Node.js may come from elsewhere than Debian; any node on PATH will do.
  if [ "$pkg" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  [ -e "${NEED[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: missing system packages: ${missing[*]}" >&2
    echo "       install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts daemons it installs; the tests run their own instances on
  # free ports, so the packaged services are left as the machine had them.
fi

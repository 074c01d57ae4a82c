#!/usr/bin/env bash
# The admin panel's tests drive a real headless Chromium through ChromeDriver: Debian's
# `chromium` and `chromium-driver`, installed here when missing (as root, or with sudo).
set -euo pipefail
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && exit 0
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing chromium and chromium-driver for the admin panel's browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q chromium chromium-driver >/dev/null \
  || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q chromium chromium-driver >/dev/null; }
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { echo "chromium or chromedriver is still missing: install Debian's chromium and chromium-driver" >&2; exit 1; }

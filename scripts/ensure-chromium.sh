#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are installed (the console's browser
# tests, tests/console, drive them through Selenium). Installs Debian's `chromium` and
# `chromium-driver` packages when either binary is missing; does nothing otherwise.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-chromium: installing chromium and chromium-driver (apt)" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null

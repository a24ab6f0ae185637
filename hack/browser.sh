#!/usr/bin/env bash
# Makes sure Debian's chromium is installed: the invitation portal's browser test
# (controllers/invitation_browser_test.go, chromedp) drives /usr/bin/chromium, and
# fails without it rather than skipping. Installs chromium and fonts-liberation
# with apt-get when missing: as root directly, otherwise through sudo if it needs
# no password. Anything else stops with the command to run.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi

packages=(chromium fonts-liberation)
# Waits for another apt/dpkg run (unattended upgrades) instead of failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=600)
if [[ "$(id -u)" == 0 ]]; then
  run=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  run=(sudo -n)
else
  echo "browser: /usr/bin/chromium is missing and installing it needs root:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "browser: /usr/bin/chromium is missing and there is no apt-get to install Debian's ${packages[*]}" >&2
  exit 1
fi

echo "browser: installing ${packages[*]} (apt-get) for the browser test" >&2
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get "${apt_opts[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
/usr/bin/chromium --version >&2

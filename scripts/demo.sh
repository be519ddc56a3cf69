#!/bin/bash
# The main job on its embedded default: the lab network in namespaces, the default fleet
# (instances/) under miredoctl and supervisord, qualification, and pings through the tunnels.
# Called by `make demo` after the Debian packages and .venv are in place.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/miredoctl demo

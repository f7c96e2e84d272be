#!/bin/sh
# run-on-temp-sqlite.sh PROGRAM [URL-PREFIX] [QUERY]: runs PROGRAM with a
# sqlite:// URL on a fresh database file that is removed afterwards.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$1" "${2:-}sqlite://$dir/bus.db${3:+?$3}"

#!/bin/sh
# Runs a program with a fresh SQLite database: every argument containing
# @DB@ gets the path of bus.db in a new temporary directory, which is
# removed afterwards. Exit status is the program's.
#   tmpdb.sh PROGRAM [ARG...]
set -u
dir=$(mktemp -d "${TMPDIR:-/tmp}/evbus-sqlite.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT INT TERM
prog=$1
shift
for a in "$@"; do
  shift
  case $a in
    *@DB@*) a=$(printf '%s' "$a" | sed "s|@DB@|$dir/bus.db|g") ;;
  esac
  set -- "$@" "$a"
done
"$prog" "$@"

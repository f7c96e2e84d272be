#!/bin/sh
# What README promises about symbols: the shared library exports only
# public evbus_* names (no internal evbus__* ones), and the static archive
# defines no global symbol outside the evbus_ namespace (internal ones are
# evbus__*), so a program that links libevbus.a statically can define any
# name of its own.
#   exported-symbols.sh LIBEVBUS.so LIBEVBUS.a
set -u
so=$1 ar=$2
command -v nm >/dev/null || { echo "SKIP: nm (binutils) is not installed"; exit 77; }
status=0
bad=$(nm -D --defined-only "$so" | awk 'NF==3 && $2 ~ /[A-Z]/ {print $3}' |
      grep -v '^_' | grep -v '^evbus_[a-z0-9]' )
if [ -n "$bad" ]; then
  echo "$so exports names outside the public evbus_ ones (internal"
  echo "evbus__ names are hidden):"; echo "$bad" | head -50
  status=1
fi
# AddressSanitizer adds __odr_asan.<name> beside each global: not ours.
bad=$(nm -g --defined-only "$ar" 2>/dev/null | awk 'NF==3{print $3}' |
      grep -v '^evbus_' | grep -v '^EVBUS_' | grep -v '^__odr_asan[.]evbus_')
if [ -n "$bad" ]; then
  echo "$ar defines $(echo "$bad" | wc -l) global names outside evbus_:"
  echo "$bad" | head -50
  status=1
fi
[ $status -eq 0 ] && echo "exports: only evbus_* in $(basename "$so") and $(basename "$ar")"
exit $status

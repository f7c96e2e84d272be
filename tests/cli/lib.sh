# Shared checks of the CLI test scripts (sourced). The script sets $tmp (a
# private directory) and reads $fails at the end.
#   fail MESSAGE                 count a failed check
#   expect_rc WANT WHAT CMD...   run CMD (stdin /dev/null), output in
#                                $tmp/out and $tmp/err; fail unless it exits WANT
#   contains FILE TEXT WHAT      fail unless FILE holds TEXT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
expect_rc() {
    local want=$1 what=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$?
    if [ "$rc" != "$want" ]; then
        fail "$what: exit $rc, wanted $want"
        sed 's/^/  stdout: /' "$tmp/out" >&2
        sed 's/^/  stderr: /' "$tmp/err" >&2
        return 1
    fi
    return 0
}
contains() {
    grep -qF -- "$2" "$1" || { fail "$3: '$2' not in:"; sed 's/^/  | /' "$1" >&2; }
}

# Helpers for test scripts, sourced before /test.sh.
#
# check NAME CMD...: runs CMD, shows its output prefixed with [NAME], then prints
# "NETPATH-RESULT NAME ok" or "NETPATH-RESULT NAME fail rc=N".
check() {
    _name=$1
    shift
    _out=$("$@" 2>&1)
    _rc=$?
    [ -n "$_out" ] && echo "$_out" | sed "s/^/[$_name] /"
    if [ $_rc -eq 0 ]; then
        echo "NETPATH-RESULT $_name ok"
    else
        echo "NETPATH-RESULT $_name fail rc=$_rc"
    fi
    return $_rc
}

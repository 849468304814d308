#!/bin/bash
# run_probes.sh BUILD_DIR SPEC... — builds each dependency probe target and checks the outcome.
# A SPEC is name:kind:what:expect, kind include|link, expect ok|fail. A "fail" probe passes only
# when the build fails for the reason probed (the header not found, the symbol undefined), so a
# probe broken for another reason cannot pass; the "ok" probes show the mechanism compiles and
# links what is allowed.
set -u
build=$1
shift
bad=0
for spec in "$@"; do
    IFS=: read -r name kind what expect <<<"$spec"
    out=$(cmake --build "$build" --target "probe_$name" 2>&1)
    rc=$?
    if [ "$kind" = include ]; then why="$what: No such file"; else why="undefined reference to .$what'"; fi
    if [ "$expect" = ok ]; then
        if [ $rc -eq 0 ]; then verdict=pass; else verdict=FAIL; fi
    elif [ $rc -ne 0 ] && grep -q "$why" <<<"$out"; then
        verdict=pass
    else
        verdict=FAIL
    fi
    printf '%-4s probe %-22s %-7s %-28s expected %s, build rc=%d\n' "$verdict" "$name" "$kind" "$what" "$expect" "$rc"
    if [ "$verdict" = FAIL ]; then
        bad=1
        grep -m5 -E 'error|undefined' <<<"$out" | sed 's/^/       /'
    fi
done
exit $bad

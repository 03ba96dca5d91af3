#!/bin/sh
# The grader (root-only, so the agent cannot read the answers): checks task $TASK_ID's work in
# $WORKDIR. Exit 0: resolved.
cd "${WORKDIR:-/testbed}" || exit 2
case ${TASK_ID:-} in
    hello-world) [ "$(python3 app.py)" = "hello, world" ] ;;
    fix-permissions) [ -x run.sh ] ;;
    *) echo "unknown task '${TASK_ID:-}'" >&2; exit 2 ;;
esac

#!/bin/sh
# The grader (root-only, so the agent cannot read it): runs the task's FAIL_TO_PASS tests,
# which the image carries in /tests, against the agent's work in $WORKDIR. Exit 0: resolved.
cd "${WORKDIR:-/testbed}" || exit 2
PYTHONPATH=$PWD exec python3 -m unittest discover -s /tests -t /tests -p 'test_*.py'

#!/bin/sh
# The hidden tests: root-only, so the agent cannot read the answers.
grep -q "hello, world" /testbed/app.py

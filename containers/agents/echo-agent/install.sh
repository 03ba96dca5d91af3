#!/bin/sh
# Links the agent into place inside the fused rootfs.
ln -sf /opt/agent/bin/agent /usr/local/bin/echo-agent 2>/dev/null || true

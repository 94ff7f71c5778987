"""The chain layer: connect(), snapshots, time travel, manifests, and the local node (`agentmarket node`)
starting and restarting."""

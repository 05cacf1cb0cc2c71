"""Sans-IO Raft core: a pure, deterministic state machine (etcd-raft shape)."""

"""ukehi-jepsen: the run lifecycle (spec, interpreter, history, store, CLI, backends, report)."""

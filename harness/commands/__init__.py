"""One module per `ukehi-jepsen` command; each exposes register(app)."""

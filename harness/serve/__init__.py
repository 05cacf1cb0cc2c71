"""`ukehi-jepsen serve`: the results browser (a WSGI app on the standard library's server).

    from harness.serve.app import App          # a WSGI callable over one results dir
    from harness.serve.server import serve     # serve(results_dir, host, port)

Read-only but for one thing: the re-analysis button (POST, loopback only) writes a checked
copy under ``<run>/reanalysis/<timestamp>/``, never over the stored results.
"""

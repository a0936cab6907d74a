"""Runtime: settings, bootstrap, queue and worker, store, governance."""

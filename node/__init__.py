"""One Corral node process: config, task loading, workers, HTTP endpoints, metrics and the CLI."""

"""graphc.backends: code generators and runtimes. `reference` is the numpy oracle."""

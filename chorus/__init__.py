"""The composition root: the `chorus` command line (cli.py) and the one place that builds the generator, the store
and the platform and installs every feature (compose.py). Everything else is imported from here, lazily."""

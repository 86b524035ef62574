"""Loads the conformance plugin (and with it the step definitions) for `pytest features/`.
Once the package is installed, pytest's plugin entry point has loaded it already, under the
same name, and this is a no-op."""
pytest_plugins = ["steps.plugin"]

"""Loads the conformance plugin and its step definitions for `pytest features/`."""
pytest_plugins = [
    "steps.plugin",
    "steps.fixtures",
    "steps.execute_steps",
    "steps.validation_steps",
    "steps.cancel_steps",
    "steps.health_steps",
    "steps.process_steps",
    "steps.performance_steps",
]

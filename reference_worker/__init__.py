"""Reference worker for the M0 worker specification."""

"""Tools for running the whole system locally and in tests: not deployed."""

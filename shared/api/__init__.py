"""The internal HTTP APIs' contracts: the request and response shapes each service serves
and its callers read, declared once so both sides share one definition without importing
each other."""

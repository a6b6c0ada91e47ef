"""Typed clients of the other services' internal APIs: the only place in the gateway that
knows their paths. Each method returns the models the service declares in shared/api."""

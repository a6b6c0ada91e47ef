"""gateway: the firm web UI and the client pay pages; it talks to the other services
over their internal HTTP APIs."""

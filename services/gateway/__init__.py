"""gateway: the firm web UI and the client pay pages; talks to the other services over their internal HTTP APIs."""

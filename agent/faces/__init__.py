"""The operator's faces: the Textual TUI, the FastAPI web page and Prometheus metrics.

Faces only read :class:`agent.status.StatusBoard` and call :class:`agent.faces.actions.AgentActions`;
they know nothing of hivemind, torch or the chain.
"""

"""The MongoDB wire protocol endpoint of the in-memory engine (``MemoryServer.listen``).

``_protocol`` frames messages (I/O-free); ``_server`` is the TCP server that runs each request
through the engine's command dispatcher (``mongoledger.memory._commands``).
"""

from ._server import NoAuthenticationWarning, WireServer, is_loopback

__all__ = ["NoAuthenticationWarning", "WireServer", "is_loopback"]

"""
Plugins memux adds to Twisted: the ``twistd memux`` server.

Kept tiny and import-safe: Twisted imports every plugin module to list
plugins, so this names memux's modules without importing them.
"""

from twisted.application.service import ServiceMaker

memuxServiceMaker = ServiceMaker(
    "memux",
    "memux.tap",
    "A memux server: many message channels over each connection",
    "memux",
)

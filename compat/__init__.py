"""The agent-bus HTTP long-poll compatibility shim (installed as ``wsbus.compat``).

Empty until the shim lands; see docs/PROTOCOL.md for the websocket protocol.
"""

"""``wsbus mcp``: an MCP server over stdio that gives a coding agent the bus as tools.

- :mod:`.command`: the command line;
- :mod:`.agent`: the agent's hub connection and its mail (no MCP import);
- :mod:`.tools`: the tools, their argument schemas and what they do (no MCP import);
- :mod:`.server`: the adapter to the official MCP SDK (``wsbus[mcp]``).
"""

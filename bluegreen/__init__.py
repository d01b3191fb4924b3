"""Blue-green deployment core for the JW Attendant Scheduler estate on Proxmox.

Pure core (topology, renderers, command builders), one executor protocol for side effects,
and thin front-ends (CLI, MCP server, Pulumi components) over one service layer.
"""

__version__ = "0.1.0"

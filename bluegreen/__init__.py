"""Blue-green deployment core for the JW Attendant Scheduler estate on Proxmox.

Layers, bottom up (docs/DESIGN.md): `model` (the stack, validated, and pure rules), `render`
(files and command lines), `hosts` (one executor protocol and everything that talks to a host),
`ops` (one module per operation, each taking an `ops.estate.Estate`), `faces` (CLI and MCP
server). The Pulumi program (`__main__.py`, `components/`) stands beside `ops`; the lab above all.
"""

__version__ = "0.1.0"

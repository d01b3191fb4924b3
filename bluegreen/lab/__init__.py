"""The local lab: the stack `lab` on one machine (fakepve, an sshd per host, PostgreSQL, HAProxy, PM2).

`python -m bluegreen.lab up|down|status|destroy`; everything it starts is stopped by PID.
"""

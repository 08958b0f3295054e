"""Model server processes: start, stop, restart, readiness, supervision, figures.

`lifecycle` moves a server's state machine and does the work on the host's worker (launch,
stop, reconcile, on-demand start); `command` builds the command line; `supervisor` is the only
code that spawns or signals processes; `probes` asks a server whether it is ready, alive or
busy; `monitor` measures the host's servers for the tiles; `ports` finds free ones;
`mlx_entry` is the script text servers run (mlx_lm.server's own main, with the portal's
changes), `vlm_entry` the one vision servers run (mlx_vlm.server's). See docs/servers.md.
"""

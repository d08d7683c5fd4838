"""The node's leader side. `supervisor.py` (in the node) starts and watches the leader process;
`child.py` is that process; `duties.py` builds the elector and the fenced leader duties from the
node's config (in the child, or in the node itself with `leader_process = false`); `link.py` holds
what both ends of their pipe agree on. Kept free of imports: the node imports only the supervisor."""

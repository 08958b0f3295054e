"""Sharing one host fairly: the limits of each person and the fair queue in front of each
server (`admission`). Used by the gateway's calls (for /v1 and the chat alike) and by the pages
that show queues and use. See docs/sharing.md."""

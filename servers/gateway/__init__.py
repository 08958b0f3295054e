"""The OpenAI-compatible gateway: everything under `/v1/`, and the hop between hosts.

A `/v1` request crosses, in order: `views` (the endpoint; `auth.api_key_required` has checked
the key) → `calls` (the profile the `model` names, its server running or started on demand) →
`schema` (the body rebuilt from the table of allowed fields) → `hop` (this host's server, or
another host's web tier) → `transport` (one HTTP/1.0 request to the model server, the client
watched meanwhile) → `relay` (the answer passed on, measured) → servers.usage (one usage
record). `errors` is the one error type (OpenAI's shape); `openapi` describes it all.
See docs/gateway.md and docs/architecture.md.
"""

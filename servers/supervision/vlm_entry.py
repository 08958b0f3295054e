"""How the portal runs `mlx_vlm.server` (the vision engine): its own `main()`, with the changes
that make it fit to be shared behind the portal.

    python servers/supervision/vlm_entry.py <mlx_vlm.server options>

1. **Only its own model.** mlx_vlm.server (0.7) loads whatever a request's `model` names — a
   local path or a Hugging Face repo, downloaded on the fly — and also serves image generation,
   speech, embeddings and rerankers by name. Here every chat request is answered by the model
   given with `--model` (the portal sends "default_model", as to mlx_lm.server), and a request
   for any other kind of model is refused with 404: nothing is loaded or downloaded by name.
2. **Cross-origin requests only from its own origin** (mlx_vlm allows `*`, with credentials).

Nothing else changes: the options, the HTTP server (uvicorn) and the generation code are
mlx_vlm's own. What the text engine's entry (mlx_entry.py) adds and this one does not — a
non-streamed request stopped when its client leaves, `GET /portal/status`, the portal's own
context check — is listed in docs/servers.md ("The vision engine"). This file runs as a script
in the model server's process and imports nothing of the portal.
"""

from __future__ import annotations

import sys

# The model kinds a chat request loads (mlx_vlm.server.app.get_cached_model's `model_kind`).
CHAT_KINDS = frozenset({"auto", "text_generation"})


def option(argv: list[str], name: str) -> str | None:
    """The value of `name` in `argv` (`--name value` or `--name=value`), else None."""
    for index, item in enumerate(argv):
        if item == name and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(name + "="):
            return item.partition("=")[2]
    return None


def pin_model(modules, model_path: str, refuse) -> int:
    """Make `get_cached_model` of `modules[0]` (the mlx_vlm.server package, which its endpoints
    look the function up in) — and of every other module of `modules` holding the same
    function — load only `model_path` for chat requests, whatever name they give, and call
    `refuse(kind)` for any other kind; how many modules were changed."""
    original = getattr(modules[0], "get_cached_model", None)
    if not callable(original):
        return 0

    def get_cached_model(_name, *args, model_kind="auto", **kwargs):
        if model_kind not in CHAT_KINDS:
            refuse(model_kind)
        return original(model_path, *args, model_kind=model_kind, **kwargs)

    changed = 0
    for module in modules:
        if getattr(module, "get_cached_model", None) is original:
            module.get_cached_model = get_cached_model
            changed += 1
    return changed


def main(argv: list[str]) -> None:
    # Here, not at the top: only the model server's process loads mlx_vlm (and the portal may
    # import this module's pure helpers).
    import mlx.core as mx
    import mlx_vlm
    import mlx_vlm.server as server
    from fastapi import HTTPException
    from mlx_vlm.server import cli
    from starlette.middleware.cors import CORSMiddleware

    model_path = option(argv, "--model")
    if not model_path:
        raise SystemExit("--model is required")
    notes = []

    def refuse(kind: str):
        raise HTTPException(
            status_code=404, detail=f"This server serves only its own chat model, not {kind}."
        )

    modules = [server, *(m for n, m in sys.modules.items() if n.startswith("mlx_vlm.server."))]
    if pin_model(modules, model_path, refuse):
        notes.append("every chat request is answered by its own model; nothing loads by name")
    else:
        notes.append("mlx_vlm's model cache is not the known one: requests may load by name")
    origin = f"http://{option(argv, '--host') or '127.0.0.1'}:{option(argv, '--port') or 8080}"
    cors = [m for m in server.app.user_middleware if m.cls is CORSMiddleware]
    for middleware in cors:
        middleware.kwargs.update(allow_origins=[origin], allow_credentials=False)
    notes.append(f"cross-origin requests only from {origin}" if cors else "no CORS middleware")
    versions = f"mlx-vlm {mlx_vlm.__version__}, mlx {mx.__version__}"
    print(f"MLX Portal: mlx_vlm.server ({versions}); {'; '.join(notes)} "
          "(servers/supervision/vlm_entry.py)", file=sys.stderr, flush=True)  # fmt: skip
    sys.argv = ["mlx_vlm.server", *argv]
    cli.main()


if __name__ == "__main__":
    # This folder is sys.path[0]: its modules (models.py, tasks.py, …) must not shadow what
    # mlx_vlm and its dependencies import.
    sys.path.pop(0)
    main(sys.argv[1:])

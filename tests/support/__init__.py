"""Test support: tiny MLX models, a local Hugging Face Hub and real mlx_lm.server processes.

Nothing here imports Django, so the helpers work in any pytest run (and from a shell).
"""

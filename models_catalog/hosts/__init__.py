"""The hosts room: the machines that run portal workers, each on its own queue.

* `models.py`: the `Host` model (registered in the `models_catalog` app, whose table it keeps).
* `facts.py`: what a host reports about its machine (memory, disk, platform, MLX versions, its
  models), and the one rule of "online".
* `heartbeat.py`: the worker's thread that writes its host's facts every few seconds.
* `queue.py`: `enqueue()`, the one way to send a task to a host's queue after commit.

See docs/hosts.md.
"""

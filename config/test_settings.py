"""Settings for the test suite: pytest (pyproject.toml) and the portal processes the tests start
(`tests.support.workers.process_env`). The portal's own settings, plus what every test needs;
a test that needs another value sets it with pytest-django's `settings` fixture."""

import os

from config.test_workers import worker_environment

# A fixed key, given the way an operator gives one: the test process and the workers and web
# tiers it starts share it, and no test writes a key file.
os.environ["DJANGO_SECRET_KEY"] = "mlx-portal-test-suite-" + "k" * 50

# A pytest-xdist worker of `make test` takes its own Redis database, data directory and slice of
# the model servers' ports (config/test_workers.py), before the settings below read them.
os.environ.update(worker_environment(os.environ))

from config.settings import *  # noqa: F403

# PBKDF2's deliberate slowness costs a second or more per user made on the 2-core machine, and
# no test is about the hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

"""`python -m config.redis_check [-q]`: exit 0 when Redis answers at $REDIS_URL, else 1.

Used by `make run` and `make test` before anything starts, so a missing Redis is said plainly.
"""

import os
import sys

import redis


def main(argv: list[str]) -> int:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if "-q" not in argv:
            print(f"Redis at {url} does not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

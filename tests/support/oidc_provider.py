"""A real OpenID Connect provider for the SSO tests: the certified `oidc-provider` package from
npm, run by `oidc_provider.mjs` in its own Node process (as the fake Hub stands in for
Hugging Face, except that here nothing is a stand-in: the provider is the real thing).

The package is installed once, pinned, into `<test cache>/oidc-provider-<version>/` (never into
the portal), under a file lock, with npm's scripts off. Needs Node.js and npm on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .tiny_models import _exclusive_lock, default_cache_root

VERSION = "9.13.3"
PACKAGE = f"oidc-provider@{VERSION}"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
START_TIMEOUT = 30


def module_dir() -> Path:
    return default_cache_root() / f"oidc-provider-{VERSION}"


def ensure_installed() -> Path:
    """The folder whose node_modules holds oidc-provider, installing it the first time."""
    target = module_dir()
    entry = target / "node_modules" / "oidc-provider" / "lib" / "index.js"
    if entry.is_file():
        return target
    if not (shutil.which("node") and shutil.which("npm")):
        raise RuntimeError("The SSO tests need Node.js and npm (apt-get install nodejs npm).")
    target.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target / ".install.lock"):
        if not entry.is_file():
            step = ["npm", "install", "--prefix", str(target), "--no-audit", "--no-fund",
                    "--ignore-scripts", "--no-save", PACKAGE]  # fmt: skip
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not entry.is_file():
                raise RuntimeError(f"npm install {PACKAGE} failed: {done.stderr.strip()[-800:]}")
    return target


@dataclass
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen = field(repr=False)

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(
            self.issuer + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204, response.status

    def set_accounts(self, accounts: dict[str, dict]) -> None:
        """The claims each login name gets (`{"alice": {"email": …, "email_verified": True}}`);
        a login name not listed gets only `sub`."""
        self._post("/__test/accounts", accounts)

    def tamper_next_id_token(self, mode: str) -> None:
        """Re-sign the next ID token: "bad-signature", "wrong-audience" or "expired"."""
        self._post("/__test/tamper", {"mode": mode})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_oidc_provider(
    redirect_uris: list[str], client_id: str = "mlx-portal", client_secret: str = "s3cret-for-tests"
) -> OidcProvider:
    """Start the provider with one client (the portal); returns once it prints its issuer."""
    modules = ensure_installed()
    config = {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": redirect_uris,
    }
    log = Path(tempfile.mkdtemp(prefix="oidc-provider-")) / "stderr.log"
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            ["node", str(SCRIPT), str(modules), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "NODE_ENV": "test"},
        )
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # blocks until the issuer, or EOF if it died
    if not line.startswith("http://"):
        process.kill()
        process.wait(timeout=START_TIMEOUT)
        raise RuntimeError(f"The OpenID provider did not start: {line} {log.read_text()[-800:]}")
    return OidcProvider(line, client_id, client_secret, process)

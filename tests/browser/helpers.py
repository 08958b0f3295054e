"""Waits shared by the browser journeys."""

from __future__ import annotations


def wait_for_partial_progress(page, container: str, timeout: float = 30_000) -> None:
    """Wait until the first `.download-percent` inside `container` shows between 1 and 99 %:
    the live poll has shown a download under way, not only its start or its end."""
    page.wait_for_function(
        """(container) => {
            const p = document.querySelector(container + ' .download-percent');
            const n = p && parseInt(p.textContent);
            return n > 0 && n < 100;
        }""",
        arg=container,
        timeout=timeout,
    )

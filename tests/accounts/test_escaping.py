"""No text/html answer pastes what a request sent unescaped.

The "outside attack" report: an admin who opened
`/models/downloads/action/?repo_id=<script src=…></script>` got a `text/html` 400 with the repo id
pasted as is, and the script it loaded made another user superuser. The first test replays it;
the walk below looks for the same mistake everywhere.
"""

import pytest

ATTACK_SCRIPT = '<script src="https://evil.example/x.js"></script>'


def test_the_reported_attack_url_answers_with_the_repo_id_escaped(admin_client):
    response = admin_client.get("/models/downloads/action/", {"repo_id": ATTACK_SCRIPT})

    assert response.status_code == 400
    body = response.content.decode()
    assert "<script" not in body
    assert "&lt;script src=&quot;https://evil.example/x.js&quot;&gt;" in body
    # The message still says what is wrong, inside the fragment the model page swaps in.
    assert "is not a model repo id" in body.replace("&#x27;", "'")
    assert 'class="download-action"' in body


@pytest.mark.parametrize("repo_id", ["", "x" * 201])
def test_every_refusal_of_the_download_action_is_the_escaped_fragment(member_client, repo_id):
    response = member_client.get("/models/downloads/action/", {"repo_id": repo_id})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert 'class="download-action"' in response.content.decode()

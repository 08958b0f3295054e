"""My models refuses to delete a model that a server of this host holds (servers register
what they use with models_catalog), and lets it go once the server is stopped."""

import pytest

from servers.models import ServerInstance, State

pytestmark = pytest.mark.django_db


def delete(client, repo_id):
    return client.post("/models/local/delete/", {"repo_id": repo_id}, follow=True)


def test_a_model_held_by_a_running_server_cannot_be_deleted(
    admin_client, local_models, hf_cache, make_profile
):
    repo_id = local_models[0]
    profile = make_profile("Busy", model_id=repo_id)
    instance = profile.get_instance()
    ServerInstance.objects.filter(pk=instance.pk).update(state=State.RUNNING)

    page = delete(admin_client, repo_id).content.decode()
    assert "in use by a running server" in page
    assert (hf_cache / ("models--" + repo_id.replace("/", "--"))).is_dir()

    ServerInstance.objects.filter(pk=instance.pk).update(state=State.STOPPED)
    page = delete(admin_client, repo_id).content.decode()
    assert f"Deleted {repo_id}" in page
    assert not (hf_cache / ("models--" + repo_id.replace("/", "--"))).exists()


def test_a_draft_model_in_use_is_protected_too(admin_client, local_models, make_profile):
    model, draft = local_models
    profile = make_profile("Drafting", model_id=model, draft_model_id=draft)
    ServerInstance.objects.filter(pk=profile.get_instance().pk).update(state=State.STARTING)
    assert "in use by a running server" in delete(admin_client, draft).content.decode()

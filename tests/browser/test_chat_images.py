"""Chat with images in a real browser: an image attached (picked, or pasted), its thumbnail in
the message, the vision server's answer, both still there after a reload; a text server says
it cannot see images; the profile form shows only the vision engine's options."""

import pytest
from PIL import Image

from tests.browser.test_chat import log_in
from tests.support.profiles import running_profile
from tests.support.tiny_models import REPLY

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def png_file(tmp_path, name="sunset.png", color=(250, 120, 40)):
    path = tmp_path / name
    image = Image.new("RGB", (480, 320), color)
    for x in range(480):  # a gradient, so the thumbnail shows something
        for y in range(0, 320, 8):
            image.putpixel((x, y), (x // 2, 60, 200 - y // 2))
    image.save(path)
    return path


def test_attach_an_image_see_it_and_the_answer_and_again_after_a_reload(
    vision_server, member, client, page, live_server, screenshot, tmp_path
):
    running_profile(vision_server, member, "Eyes", engine="vision")
    log_in(page, client, member, live_server.url)
    page.goto("/servers/chat/")
    page.locator("#chat-images").set_input_files(str(png_file(tmp_path)))
    preview = page.get_by_test_id("image-previews").locator("img")
    preview.wait_for()
    assert preview.get_attribute("src").startswith("data:image/png;base64,")
    page.get_by_label("Message").fill("What is in this picture?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('.msg-assistant[data-status="ok"]')
    answer.wait_for()
    assert answer.locator(".msg-body").inner_text().strip() == REPLY
    thumb = page.locator(".msg-user img.chat-thumb")
    assert thumb.get_attribute("alt") == "sunset.png"
    page.wait_for_function(
        "() => { const i = document.querySelector('.msg-user img.chat-thumb');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.get_by_test_id("image-previews").locator("img").count() == 0  # sent: cleared
    screenshot("chat-image")

    page.reload()
    thumb = page.locator(".msg-user img.chat-thumb")
    thumb.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('.msg-user img.chat-thumb');"
        " return i && i.complete && i.naturalWidth === 320; }"
    )
    assert page.locator(".msg-assistant .msg-body").inner_text().strip() == REPLY


def test_a_pasted_image_to_a_text_server_is_refused_with_a_clear_message(
    mlx_server, member, client, page, live_server
):
    running_profile(mlx_server, member, "Words", engine="text")
    log_in(page, client, member, live_server.url)
    page.goto("/servers/chat/")
    page.get_by_label("Message").fill("Look")
    # A pasted image, as a browser hands it over from the clipboard.
    page.evaluate(
        """async () => {
          const canvas = document.createElement('canvas');
          canvas.width = 32; canvas.height = 32;
          const blob = await new Promise(done => canvas.toBlob(done, 'image/png'));
          const data = new DataTransfer();
          data.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
          const event = new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                     cancelable: true});
          document.getElementById('chat-input').dispatchEvent(event);
        }"""
    )
    page.get_by_test_id("image-previews").locator("img").wait_for()
    page.get_by_role("button", name="Send").click()
    error = page.locator("#chat-form-error")
    error.wait_for()
    assert error.inner_text().startswith("Words cannot see images: it runs a text model.")
    assert page.locator(".msg-assistant").count() == 0


def test_too_many_images_are_refused_in_the_page(vision_server, member, client, page,
                                                 live_server, tmp_path):  # fmt: skip
    running_profile(vision_server, member, "Eyes", engine="vision")
    log_in(page, client, member, live_server.url)
    page.goto("/servers/chat/")
    paths = [str(png_file(tmp_path, f"p{i}.png")) for i in range(4)]
    page.locator("#chat-images").set_input_files(paths)
    error = page.locator("#chat-form-error")
    error.wait_for()
    assert error.inner_text() == "Attach at most 3 images to one message."
    assert page.get_by_test_id("image-previews").locator("img").count() == 3


def test_the_profile_form_shows_only_the_vision_engines_options(member, client, page,
                                                               live_server):  # fmt: skip
    log_in(page, client, member, live_server.url)
    page.goto("/servers/new/")
    page.get_by_test_id("advanced").locator("summary").click()
    draft = page.locator("#field-draft_model_id")
    assert draft.is_visible()
    page.locator("#id_engine").select_option("vision")
    assert not draft.is_visible() and not page.locator("#field-prompt_cache_size").is_visible()
    assert page.locator("#field-kv_bits").is_visible()
    page.locator("#id_engine").select_option("text")
    assert draft.is_visible()


def test_a_conversation_with_an_image_switched_to_a_text_server_says_what_it_will_not_see(
    vision_server, mlx_server, member, client, page, live_server, tmp_path
):
    """An image sent to a vision server, then (without a reload) the text server picked: the
    panel says it will not see the image and what to do, and the text server still answers."""
    running_profile(vision_server, member, "Eyes", engine="vision")
    running_profile(mlx_server, member, "Words", engine="text")
    log_in(page, client, member, live_server.url)
    page.goto("/servers/chat/")
    page.locator("#chat-profile").select_option("eyes")
    page.get_by_test_id("sees-images").wait_for()
    page.locator("#chat-images").set_input_files(str(png_file(tmp_path)))
    page.get_by_label("Message").fill("What is in this picture?")
    page.get_by_role("button", name="Send").click()
    page.locator('.msg-assistant[data-status="ok"]').wait_for()
    assert page.get_by_test_id("images-unseen").count() == 0

    page.locator("#chat-profile").select_option("words")
    note = page.get_by_test_id("images-unseen")
    note.wait_for()
    assert note.inner_text().startswith("Words runs a text model: it does not see the image of")
    page.get_by_label("Message").fill("And now?")
    page.get_by_role("button", name="Send").click()
    page.locator('.msg-assistant[data-status="ok"]').nth(1).wait_for()
    assert page.locator("#chat-form-error").is_hidden()
